"""Generate the protobuf and gRPC modules from protos/ into src/identity/v1/.

The generated code is never edited or committed: setup runs this script, so the
.proto files stay the single contract.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "src"


def main() -> int:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *files,
    ]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    init = OUT / "identity" / "v1" / "__init__.py"
    init.write_text('"""Generated from protos/identity/v1 by scripts/codegen.py; do not edit."""\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())
