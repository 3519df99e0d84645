"""tests/check_artifact.py against hand-made build directories (run by `make lint`).

The real artifact is checked by `make build` itself; these prove the check can say no.
"""

import os
import shutil
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import check_artifact  # noqa: E402

TEMPLATE = """\
Resources:
  Function:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: Function
      Handler: bootstrap
      Runtime: {runtime}
      Architectures:
      - {arch}
      MemorySize: 256
"""


def elf(machine=183, e_type=3, glibc=("2.17", "2.30")):
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HH", e_type, machine)
    dynstr = b"".join(b"GLIBC_" + v.encode() + b"\x00" for v in glibc)
    return header + bytes(64) + b"\x00libc.so.6\x00" + dynstr


class CheckArtifact(unittest.TestCase):
    def build_dir(self, data, runtime="provided.al2023", arch="arm64", mode=0o755):
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root)
        os.mkdir(os.path.join(root, "Function"))
        with open(os.path.join(root, "template.yaml"), "w", encoding="utf-8") as f:
            f.write(TEMPLATE.format(runtime=runtime, arch=arch))
        path = os.path.join(root, "Function", "bootstrap")
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return root

    def assert_refused(self, root, reason):
        with self.assertRaises(check_artifact.ArtifactError) as ctx:
            check_artifact.check(root)
        self.assertIn(reason, str(ctx.exception))

    def test_a_good_arm64_executable_passes_and_says_what_it_needs(self):
        line = check_artifact.check(self.build_dir(elf()))
        self.assertIn("arm64 ELF executable", line)
        self.assertIn("needs GLIBC_2.30", line)

    def test_an_x86_64_binary_is_refused_for_an_arm64_function(self):
        self.assert_refused(self.build_dir(elf(machine=62)), "ELF machine 62, but the function is arm64")

    def test_a_glibc_newer_than_the_runtime_is_refused(self):
        root = self.build_dir(elf(glibc=("2.17", "2.39")))
        self.assert_refused(root, "needs GLIBC_2.39, but provided.al2023 has glibc 2.34")

    def test_the_older_runtime_has_the_older_glibc(self):
        self.assert_refused(self.build_dir(elf(), runtime="provided.al2"), "has glibc 2.26")

    def test_versions_compare_as_numbers_not_text(self):
        # "2.4" < "2.30" as numbers; as text it would be the newest.
        line = check_artifact.check(self.build_dir(elf(glibc=("2.4", "2.30", "2.3.4"))))
        self.assertIn("needs GLIBC_2.30", line)

    def test_a_static_binary_needs_no_glibc(self):
        self.assertIn("needs static", check_artifact.check(self.build_dir(elf(glibc=()))))

    def test_not_executable_is_refused(self):
        self.assert_refused(self.build_dir(elf(), mode=0o644), "not executable")

    def test_a_shared_object_or_relocatable_file_is_refused(self):
        self.assert_refused(self.build_dir(elf(e_type=1)), "not an executable")

    def test_a_script_is_not_an_elf(self):
        self.assert_refused(self.build_dir(b"#!/bin/sh\nexec true\n"), "not an ELF")

    def test_a_missing_build_says_to_run_make_build(self):
        self.assert_refused(os.path.join(tempfile.gettempdir(), "kld-no-such-build"), "run `make build`")

    def test_main_exits_1_with_the_reason_on_stderr(self):
        root = self.build_dir(elf(machine=62))
        self.assertEqual(check_artifact.main(["check_artifact.py", root]), 1)


if __name__ == "__main__":
    unittest.main()
