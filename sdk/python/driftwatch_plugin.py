"""The driftwatch plugin ABI for Python plugins built with componentize-py.

A plugin component gets no WASI (the host refuses any import but
`host.log`), so no compiled extension such as the `msgpack` wheel can run
inside it. This module carries what a plugin needs in plain Python: a
MessagePack reader and writer for the host's maps, the manifest and verdict
shapes of docs/plugin-abi.md, and the Falco field names the Rust SDK's
templates use (sdk/src/fields.rs), so a Python rule's findings read like a
Rust rule's.

The plugin's `app.py` defines `class WitWorld` with `init` and
`process_batch` (the world `plugin` of sdk/wit/plugin.wit), and can leave
the wire to `Plugin.serve_init` / `Plugin.serve_batch`.
"""

import struct

ABI_VERSION = 1
SCHEMA_VERSION = 1
PRIORITIES = (
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "informational",
    "debug",
)
# A pass with nothing to say: the empty map, as the Rust SDK writes it.
PASS = b"\x80"


class DecodeError(ValueError):
    pass


# --- MessagePack -----------------------------------------------------------


def unpackb(data):
    """Decodes one MessagePack value that fills `data`."""
    value, end = _unpack(data, 0)
    if end != len(data):
        raise DecodeError("%d trailing bytes" % (len(data) - end))
    return value


def _need(data, pos, n):
    if pos + n > len(data):
        raise DecodeError("truncated at byte %d" % pos)


def _unpack(data, pos):
    _need(data, pos, 1)
    b = data[pos]
    pos += 1
    if b <= 0x7F:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if 0xA0 <= b <= 0xBF:
        return _str(data, pos, b & 0x1F)
    if 0x90 <= b <= 0x9F:
        return _array(data, pos, b & 0x0F)
    if 0x80 <= b <= 0x8F:
        return _map(data, pos, b & 0x0F)
    if b == 0xC0:
        return None, pos
    if b == 0xC2:
        return False, pos
    if b == 0xC3:
        return True, pos
    fixed = _FIXED.get(b)
    if fixed is not None:
        fmt, n = fixed
        _need(data, pos, n)
        return struct.unpack_from(fmt, data, pos)[0], pos + n
    sized = _SIZED.get(b)
    if sized is not None:
        read, fmt, n = sized
        _need(data, pos, n)
        length = struct.unpack_from(fmt, data, pos)[0]
        return read(data, pos + n, length)
    ext = _EXT.get(b)
    if ext is not None:
        # No driftwatch field is an extension type: skip its payload.
        fmt, n = ext
        if fmt is None:
            length = n
            n = 0
        else:
            _need(data, pos, n)
            length = struct.unpack_from(fmt, data, pos)[0]
        _need(data, pos + n, 1 + length)
        return None, pos + n + 1 + length
    raise DecodeError("unknown MessagePack marker 0x%02x" % b)


def _str(data, pos, n):
    _need(data, pos, n)
    try:
        return bytes(data[pos : pos + n]).decode("utf-8"), pos + n
    except UnicodeDecodeError as e:
        raise DecodeError("string is not UTF-8: %s" % e)


def _bin(data, pos, n):
    _need(data, pos, n)
    return bytes(data[pos : pos + n]), pos + n


def _array(data, pos, n):
    out = []
    for _ in range(n):
        v, pos = _unpack(data, pos)
        out.append(v)
    return out, pos


def _map(data, pos, n):
    out = {}
    for _ in range(n):
        k, pos = _unpack(data, pos)
        v, pos = _unpack(data, pos)
        out[k] = v
    return out, pos


_FIXED = {
    0xCA: (">f", 4),
    0xCB: (">d", 8),
    0xCC: (">B", 1),
    0xCD: (">H", 2),
    0xCE: (">I", 4),
    0xCF: (">Q", 8),
    0xD0: (">b", 1),
    0xD1: (">h", 2),
    0xD2: (">i", 4),
    0xD3: (">q", 8),
}
_SIZED = {
    0xD9: (_str, ">B", 1),
    0xDA: (_str, ">H", 2),
    0xDB: (_str, ">I", 4),
    0xC4: (_bin, ">B", 1),
    0xC5: (_bin, ">H", 2),
    0xC6: (_bin, ">I", 4),
    0xDC: (_array, ">H", 2),
    0xDD: (_array, ">I", 4),
    0xDE: (_map, ">H", 2),
    0xDF: (_map, ">I", 4),
}
_EXT = {
    0xD4: (None, 1),
    0xD5: (None, 2),
    0xD6: (None, 4),
    0xD7: (None, 8),
    0xD8: (None, 16),
    0xC7: (">B", 1),
    0xC8: (">H", 2),
    0xC9: (">I", 4),
}


def packb(value):
    """Encodes None, bool, int, float, str, bytes, list/tuple and dict."""
    out = bytearray()
    _pack(value, out)
    return bytes(out)


def _pack(v, out):
    if v is None:
        out.append(0xC0)
    elif v is True:
        out.append(0xC3)
    elif v is False:
        out.append(0xC2)
    elif isinstance(v, int):
        _pack_int(v, out)
    elif isinstance(v, float):
        out.append(0xCB)
        out += struct.pack(">d", v)
    elif isinstance(v, str):
        b = v.encode("utf-8")
        _header(len(b), out, 0xA0, 31, 0xD9, 0xDA, 0xDB)
        out += b
    elif isinstance(v, (bytes, bytearray)):
        _header(len(v), out, None, 0, 0xC4, 0xC5, 0xC6)
        out += v
    elif isinstance(v, (list, tuple)):
        _header(len(v), out, 0x90, 15, None, 0xDC, 0xDD)
        for x in v:
            _pack(x, out)
    elif isinstance(v, dict):
        _header(len(v), out, 0x80, 15, None, 0xDE, 0xDF)
        for k, x in v.items():
            _pack(k, out)
            _pack(x, out)
    else:
        raise TypeError("cannot encode %s as MessagePack" % type(v).__name__)


def _pack_int(v, out):
    if 0 <= v <= 0x7F:
        out.append(v)
    elif -32 <= v < 0:
        out.append(v & 0xFF)
    elif 0 <= v <= 0xFFFFFFFFFFFFFFFF:
        out.append(0xCF)
        out += struct.pack(">Q", v)
    elif -(1 << 63) <= v < 0:
        out.append(0xD3)
        out += struct.pack(">q", v)
    else:
        raise OverflowError("integer %d does not fit MessagePack" % v)


def _header(n, out, fix, fix_max, m8, m16, m32):
    if fix is not None and n <= fix_max:
        out.append(fix | n)
    elif m8 is not None and n <= 0xFF:
        out.append(m8)
        out.append(n)
    elif n <= 0xFFFF:
        out.append(m16)
        out += struct.pack(">H", n)
    else:
        out.append(m32)
        out += struct.pack(">I", n)


# --- Falco field names ------------------------------------------------------


def cmdline(event):
    """Falco's proc.cmdline: the comm, then argv[1:]."""
    p = event.get("process") or {}
    args = p.get("args") or []
    return " ".join([p.get("name") or ""] + [str(a) for a in args[1:]])


def field(event, name):
    """The value of a Falco field (the subset plugins commonly print), or
    None when the event has none, as the Rust SDK's `fields::field`."""
    p = event.get("process") or {}
    c = event.get("container")
    if name == "proc.name":
        return p.get("name") or None
    if name == "proc.cmdline":
        return cmdline(event)
    if name == "proc.exepath":
        return p.get("exe_path") or None
    if name == "proc.pname":
        return p.get("pname") or None
    if name == "proc.pid":
        return str(p.get("pid", 0))
    if name == "user.name":
        return p.get("user_name")
    if name == "user.uid":
        return str(p.get("uid", 0))
    if name == "container.id":
        return "host" if c is None else (c.get("id") or "")[:12]
    if name == "container.name":
        return "host" if c is None else c.get("name")
    if name == "container.image.repository":
        return None if c is None else c.get("image_repository")
    if name == "container.image.tag":
        return None if c is None else c.get("image_tag")
    raise KeyError("field %s is not known to driftwatch_plugin.field" % name)


def render(template, event):
    """Fills `%field` placeholders like the Rust SDK's `Template`, with
    `<NA>` for a missing value. Returns (text, {field: value})."""
    out = []
    used = {}
    i = 0
    while i < len(template):
        ch = template[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        j = i + 1
        while j < len(template) and (template[j].isalnum() or template[j] in "._"):
            j += 1
        name = template[i + 1 : j].rstrip(".")
        j = i + 1 + len(name)
        value = field(event, name)
        if value is not None:
            used[name] = value
        out.append("<NA>" if value is None else value)
        i = j
    return "".join(out), used


# --- Manifest and verdicts ---------------------------------------------------


def manifest(name, version, kinds, description="", prefilter=None):
    m = {
        "name": name,
        "version": version,
        "kinds": list(kinds),
        "description": description,
        "abi_version": ABI_VERSION,
        "schema_version": SCHEMA_VERSION,
    }
    if prefilter:
        m["prefilter"] = list(prefilter)
    return m


def in_container():
    """The prefilter condition "the event comes from a container"."""
    return {"not": {"in": {"field": "container.id", "values": ["host"]}}}


def is_in(field_name, values):
    return {"in": {"field": field_name, "values": list(values)}}


def finding(rule, priority, output, fields=None, tags=None, description=None):
    if priority not in PRIORITIES:
        raise ValueError("priority %r is not one of %s" % (priority, ", ".join(PRIORITIES)))
    f = {"rule": rule, "priority": priority, "output": output}
    if fields:
        f["fields"] = dict(fields)
    if tags:
        f["tags"] = list(tags)
    if description:
        f["description"] = description
    return f


class Plugin:
    """Base class: subclasses implement `configure(config) -> manifest dict`
    and `process(event) -> verdict dict or None` (None: pass)."""

    def configure(self, config):
        raise NotImplementedError

    def process(self, event):
        raise NotImplementedError

    def serve_init(self, config_bytes):
        config = unpackb(config_bytes) if config_bytes else {}
        if not isinstance(config, dict):
            raise ValueError("the plugin config is not a map")
        return packb(self.configure(config))

    def serve_batch(self, events_bytes):
        events = unpackb(events_bytes)
        if not isinstance(events, list):
            raise ValueError("the batch is not an array")
        out = bytearray()
        _header(len(events), out, 0x90, 15, None, 0xDC, 0xDD)
        for ev in events:
            v = self.process(ev if isinstance(ev, dict) else {})
            if v is None:
                out += PASS
            else:
                _pack(v, out)
        return bytes(out)
