"""How the command line shows protobuf replies: JSON with field names as in the .proto.

Fields at their zero value are printed too, so "count": 0 reads as zero, not as missing.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.json_format import MessageToDict

__all__ = ["message_dict", "print_message"]


def message_dict(message: Any) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


def print_message(message: Any) -> None:
    print(json.dumps(message_dict(message), indent=2, ensure_ascii=False))
