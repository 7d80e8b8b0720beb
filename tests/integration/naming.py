"""An independent implementation of the key -> path rule in docs/naming.md,
used to check the mount against etcdctl's key list."""


def encode_segment(seg: bytes, ns: int = 0) -> bytes:
    out = b"%+" if ns else b""
    if seg == b"":
        return out + b"%"
    dots = seg in (b".", b"..")
    for b in seg:
        if b < 0x20 or b == 0x7F or b == 0x25 or (dots and b == 0x2E):
            out += b"%%%02X" % b
        else:
            out += bytes([b])
    return out


def key_to_path(key: bytes, prefix: bytes = b"") -> bytes:
    """Relative path (bytes) at which key appears in a mount of prefix."""
    if prefix and not prefix.endswith(b"/"):
        prefix += b"/"
    assert key.startswith(prefix)
    rel = key[len(prefix):]
    ns = 0
    if not prefix:
        if rel.startswith(b"/"):
            rel = rel[1:]
        else:
            ns = 1
    segs = rel.split(b"/")
    parts = [encode_segment(segs[0], ns)] + [encode_segment(s) for s in segs[1:]]
    return b"/".join(parts)


def expected_files(keys, prefix=b""):
    """Set of file paths a mount must show for these keys, applying the
    key-that-is-also-a-prefix rule (its value appears as DIR/%value)."""
    paths = {key_to_path(k, prefix) for k in keys}
    dirs = set()
    for p in paths:
        parts = p.split(b"/")
        for i in range(1, len(parts)):
            dirs.add(b"/".join(parts[:i]))
    return {p + b"/%value" if p in dirs else p for p in paths}, dirs
