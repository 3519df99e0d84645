"""Checks the Lambda artifact that `sam build` left, before anyone uploads it.

`sam build` succeeds whatever cargo lambda produced; a wrong artifact only shows up in the cloud,
as `Runtime.InvalidEntrypoint` or a `GLIBC_2.xx not found` at the first cold start. So `make build`
ends by checking, offline, what the runtime needs of the file:

- it is an executable ELF for the template's architecture (arm64: machine 183, AArch64);
- every glibc symbol version it references exists in the runtime's glibc
  (provided.al2023 ships glibc 2.34);
- the template's function really points at it (CodeUri directory + `bootstrap`).

Usage: python tests/check_artifact.py [.aws-sam/build]
Prints one line with the facts on success; exits 1 with the reason otherwise.
"""

import os
import re
import struct
import sys

# glibc of the Lambda OS-only runtime the template uses (Amazon Linux 2023).
RUNTIME_GLIBC = {"provided.al2023": (2, 34), "provided.al2": (2, 26)}
ELF_MACHINE = {"arm64": 183, "x86_64": 62}


class ArtifactError(Exception):
    pass


def built_function(build_dir):
    """The (CodeUri, Runtime, Architecture) of the one function in the built template.

    The built template is SAM's own output, plain enough to read without a YAML library (the
    lint venv has one, but this check must not depend on which venv runs it).
    """
    path = os.path.join(build_dir, "template.yaml")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ArtifactError(f"no built template at {path} ({e.strerror}): run `make build`") from e
    code_uri = re.search(r"^\s+CodeUri:\s*(\S+)\s*$", text, re.M)
    runtime = re.search(r"^\s+Runtime:\s*(\S+)\s*$", text, re.M)
    arch = re.search(r"^\s+Architectures:\s*\n\s+-\s*(\S+)\s*$", text, re.M)
    if not (code_uri and runtime and arch):
        raise ArtifactError(f"{path}: no CodeUri, Runtime and Architectures for the function")
    return code_uri.group(1), runtime.group(1), arch.group(1)


def elf_facts(data):
    """(machine, is_executable, glibc versions referenced) of a 64-bit little-endian ELF."""
    if data[:4] != b"\x7fELF":
        raise ArtifactError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ArtifactError("not a 64-bit little-endian ELF")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    # ET_EXEC (2) or a position-independent executable (ET_DYN, 3): both run as a bootstrap.
    executable = e_type in (2, 3)
    versions = {
        tuple(int(p) for p in m.group(1).split(b"."))
        for m in re.finditer(rb"GLIBC_(\d+\.\d+(?:\.\d+)?)\x00", data)
    }
    return e_machine, executable, versions


def check(build_dir):
    code_uri, runtime, arch = built_function(build_dir)
    bootstrap = os.path.join(build_dir, code_uri, "bootstrap")
    try:
        with open(bootstrap, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ArtifactError(f"{bootstrap}: {e.strerror}") from e
    if not os.access(bootstrap, os.X_OK):
        raise ArtifactError(f"{bootstrap}: not executable")
    machine, executable, versions = elf_facts(data)
    want = ELF_MACHINE.get(arch)
    if want is None:
        raise ArtifactError(f"unknown architecture {arch!r} in the built template")
    if machine != want:
        raise ArtifactError(f"{bootstrap}: ELF machine {machine}, but the function is {arch} ({want})")
    if not executable:
        raise ArtifactError(f"{bootstrap}: an ELF, but not an executable")
    glibc = RUNTIME_GLIBC.get(runtime)
    if glibc is None:
        raise ArtifactError(f"unknown runtime {runtime!r}: add its glibc to RUNTIME_GLIBC")
    newest = max(versions, default=None)
    if newest is not None and newest > glibc:
        shown = ".".join(map(str, newest))
        raise ArtifactError(
            f"{bootstrap}: needs GLIBC_{shown}, but {runtime} has glibc {glibc[0]}.{glibc[1]}"
        )
    needs = "static" if newest is None else "GLIBC_" + ".".join(map(str, newest))
    return (
        f"{bootstrap}: {len(data) / 1e6:.1f} MB, {arch} ELF executable, "
        f"needs {needs} (≤ {runtime}'s {glibc[0]}.{glibc[1]})"
    )


def main(argv):
    build_dir = argv[1] if len(argv) > 1 else ".aws-sam/build"
    try:
        print(check(build_dir))
    except ArtifactError as e:
        print(f"check_artifact: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
