# SPDX-License-Identifier: MIT
"""Turn etc/keyfs-dev.ini into a C string, kf_config_embedded_dev."""
import sys

src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f:
    data = f.read()
body = "".join("\\x%02x" % b for b in data)
with open(dst, "w") as f:
    f.write("/* generated from etc/keyfs-dev.ini; do not edit */\n")
    f.write("const char kf_config_embedded_dev[] = \"%s\";\n" % body)
