#!/usr/bin/env python3
"""gen_schema.py: build etcdfs' compact Kubernetes schema table (src/k8s/k8s_schema_data.c).

Input: checkouts (or `git archive` snapshots) of four upstream repositories,
given as directories on the command line:

    --api             k8s.io/api                     (every */*/generated.proto + types*.go)
    --apimachinery    k8s.io/apimachinery            (pkg/apis/meta/v1, pkg/runtime,
                                                      pkg/api/resource, pkg/util/intstr)
    --apiextensions   k8s.io/apiextensions-apiserver (pkg/apis/apiextensions/v1, v1beta1)
    --aggregator      k8s.io/kube-aggregator         (pkg/apis/apiregistration/v1, v1beta1)

From each package it reads two kinds of facts:
  * generated.proto: message names, field numbers, protobuf types, repeated/map;
  * the Go type declarations (*.go): field order, JSON names, omitempty/omitzero,
    Go pointer-ness and embedded (inline) structs, which TypeMeta marks as a kind.
The group name comes from `+groupName=` in doc.go or `GroupName = ".."` in register.go.

Output: a C file with three tables (messages, fields in Go/JSON order, kinds), in
the format declared by src/k8s/k8s_schema.h. Only facts are emitted; no upstream
text is copied. Python 3 standard library only.

Usage:
    tools/k8s-schema/gen_schema.py --api A --apimachinery M --apiextensions E \
        --aggregator G -o src/k8s/k8s_schema_data.c
"""

import argparse
import os
import re
import sys

# ---------------------------------------------------------------------------
# Which packages to read: (repository key, package directory relative to repo)

APIMACHINERY_PKGS = [
    "pkg/apis/meta/v1",
    "pkg/runtime",
    "pkg/runtime/schema",
    "pkg/api/resource",
    "pkg/util/intstr",
]
APIEXT_PKGS = ["pkg/apis/apiextensions/v1", "pkg/apis/apiextensions/v1beta1"]
AGG_PKGS = ["pkg/apis/apiregistration/v1", "pkg/apis/apiregistration/v1beta1"]

# Messages whose JSON form is not the default struct mapping (custom MarshalJSON
# in Go). Values are the special-kind names of k8s_schema.h (K8S_S_<name>).
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "TIME",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "MICROTIME",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "DURATION",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "RAWJSON",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "QUANTITY",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": "QUANTITY",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "INTORSTRING",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RAWEXT",
}
for _v in ("v1", "v1beta1"):
    _p = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions." + _v + "."
    SPECIAL[_p + "JSON"] = "RAWJSON"
    SPECIAL[_p + "JSONSchemaPropsOrArray"] = "PROPS_OR_ARRAY"
    SPECIAL[_p + "JSONSchemaPropsOrBool"] = "PROPS_OR_BOOL"
    SPECIAL[_p + "JSONSchemaPropsOrStringArray"] = "PROPS_OR_STRARRAY"

SCALARS = {
    "string": "STRING",
    "bytes": "BYTES",
    "bool": "BOOL",
    "int32": "INT32",
    "int64": "INT64",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "sint32": "SINT32",
    "sint64": "SINT64",
    "double": "DOUBLE",
    "float": "FLOAT",
    "fixed32": "FIXED32",
    "fixed64": "FIXED64",
    "sfixed32": "SFIXED32",
    "sfixed64": "SFIXED64",
}


def warn(msg):
    print("gen_schema: warning: " + msg, file=sys.stderr)


# ---------------------------------------------------------------------------
# generated.proto reader

class ProtoField:
    def __init__(self, label, ptype, name, number, key_type=None):
        self.label = label  # optional, repeated, required, map
        self.ptype = ptype  # scalar name or fully-qualified message name
        self.name = name
        self.number = number
        self.key_type = key_type


class ProtoMsg:
    def __init__(self, fullname, package, shortname):
        self.fullname = fullname
        self.package = package
        self.shortname = shortname
        self.fields = []  # in proto declaration order
        self.nullable_slice = False  # "+protobuf.nullable=true": a Go named slice


def strip_block_comments(text):
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def read_proto(path):
    text = strip_block_comments(open(path, encoding="utf-8").read())
    package = None
    msgs = []
    cur = None
    comment_lines = []
    for raw in text.split("\n"):
        line = raw.strip()
        if line.startswith("//"):
            comment_lines.append(line)
            continue
        m = re.match(r"package\s+([\w.]+)\s*;", line)
        if m:
            package = m.group(1)
            comment_lines = []
            continue
        m = re.match(r"message\s+(\w+)\s*\{", line)
        if m:
            if cur is not None:
                raise SystemExit("%s: nested message %s not supported" % (path, m.group(1)))
            cur = ProtoMsg(package + "." + m.group(1), package, m.group(1))
            cur.nullable_slice = any("+protobuf.nullable=true" in c for c in comment_lines)
            comment_lines = []
            continue
        if line == "}" and cur is not None:
            msgs.append(cur)
            cur = None
            comment_lines = []
            continue
        if cur is not None and line:
            m = re.match(r"map\s*<\s*([\w.]+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)", line)
            if m:
                cur.fields.append(ProtoField("map", resolve_type(m.group(2), package),
                                             m.group(3), int(m.group(4)), m.group(1)))
            else:
                m = re.match(r"(optional|repeated|required)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)", line)
                if m:
                    cur.fields.append(ProtoField(m.group(1), resolve_type(m.group(2), package),
                                                 m.group(3), int(m.group(4))))
                elif not line.startswith(("option", "reserved")):
                    raise SystemExit("%s: cannot parse line: %s" % (path, line))
        if line:
            comment_lines = []
    return package, msgs


def resolve_type(t, package):
    if t in SCALARS:
        return t
    if t.startswith("."):
        return t[1:]
    return package + "." + t


# ---------------------------------------------------------------------------
# Go type declaration reader (struct fields with their tags)

class GoField:
    def __init__(self, name, gotype, embedded, json_name, omitempty, omitzero, json_skip,
                 proto_num):
        self.name = name
        self.gotype = gotype
        self.embedded = embedded
        self.json_name = json_name
        self.omitempty = omitempty
        self.omitzero = omitzero
        self.json_skip = json_skip
        self.proto_num = proto_num


def parse_tag(tag, key):
    m = re.search(r'(?:^|\s)' + key + r':"([^"]*)"', tag)
    return m.group(1) if m else None


def read_go_structs(pkgdir, aliases):
    structs = {}
    for fn in sorted(os.listdir(pkgdir)):
        if not fn.endswith(".go") or fn.endswith("_test.go") or fn.startswith("zz_generated"):
            continue
        if fn in ("generated.pb.go",):
            continue
        text = open(os.path.join(pkgdir, fn), encoding="utf-8").read()
        lines = text.split("\n")
        i = 0
        imports = dict(re.findall(r'^\s*(\w+)\s+"([^"]+)"', text, flags=re.M))
        while i < len(lines):
            m = re.match(r"type\s+(\w+)\s+struct\s*\{\s*\}", lines[i])
            if m:
                structs[m.group(1)] = []
                i += 1
                continue
            m = re.match(r"type\s+(\w+)\s+(\w+)\.(\w+)\s*$", lines[i])
            if m and m.group(2) in imports:
                # a defined type over another package's struct: same fields
                aliases[m.group(1)] = (imports[m.group(2)], m.group(3))
                i += 1
                continue
            m = re.match(r"type\s+(\w+)\s+struct\s*\{\s*$", lines[i])
            if not m:
                i += 1
                continue
            name = m.group(1)
            fields = []
            i += 1
            depth = 1
            while i < len(lines) and depth > 0:
                line = lines[i].strip()
                i += 1
                if line.startswith("//") or not line:
                    continue
                if line.startswith("}"):
                    depth -= 1
                    continue
                if line.endswith("{"):
                    # anonymous nested struct: not used by API types
                    depth += 1
                    warn("%s.%s: nested struct skipped" % (pkgdir, name))
                    continue
                if depth != 1:
                    continue
                tag = ""
                tm = re.search(r"`([^`]*)`", line)
                decl = line
                if tm:
                    tag = tm.group(1)
                    decl = line[:tm.start()]
                decl = decl.split("//")[0].strip()
                parts = decl.split()
                if len(parts) == 1:
                    gotype = parts[0]
                    fname = gotype.lstrip("*").split(".")[-1]
                    embedded = True
                elif len(parts) >= 2:
                    fname = parts[0].rstrip(",")
                    gotype = " ".join(parts[1:])
                    embedded = False
                else:
                    continue
                js = parse_tag(tag, "json")
                pb = parse_tag(tag, "protobuf")
                json_name = fname
                omitempty = omitzero = skip = False
                if js is not None:
                    opts = js.split(",")
                    if opts[0] == "-" and len(opts) == 1:
                        skip = True
                    elif opts[0]:
                        json_name = opts[0]
                    elif embedded:
                        json_name = ""
                    omitempty = "omitempty" in opts[1:]
                    omitzero = "omitzero" in opts[1:]
                    if "inline" in opts[1:]:
                        json_name = ""
                elif embedded:
                    json_name = ""
                num = None
                if pb:
                    for p in pb.split(","):
                        if p.isdigit():
                            num = int(p)
                            break
                fields.append(GoField(fname, gotype, embedded, json_name, omitempty, omitzero,
                                      skip, num))
            if name in structs and not fn.startswith("fieldsv1_"):
                # fieldsv1_byte.go / fieldsv1_string.go are build-tag variants
                warn("%s: struct %s declared twice" % (pkgdir, name))
            structs[name] = fields
    return structs


def read_group(pkgdir):
    for fn in ("doc.go", "register.go"):
        p = os.path.join(pkgdir, fn)
        if not os.path.exists(p):
            continue
        text = open(p, encoding="utf-8").read()
        m = re.search(r"\+groupName=([\w.\-]*)", text)
        if m:
            return m.group(1)
        m = re.search(r'GroupName\s*=\s*"([^"]*)"', text)
        if m:
            return m.group(1)
    return None


# ---------------------------------------------------------------------------

def import_path_of(d, args):
    for key, prefix in ((args.api, "k8s.io/api"), (args.apimachinery, "k8s.io/apimachinery"),
                        (args.apiextensions, "k8s.io/apiextensions-apiserver"),
                        (args.aggregator, "k8s.io/kube-aggregator")):
        rel = os.path.relpath(d, key)
        if not rel.startswith(".."):
            return prefix + "/" + rel
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--api", required=True)
    ap.add_argument("--apimachinery", required=True)
    ap.add_argument("--apiextensions", required=True)
    ap.add_argument("--aggregator", required=True)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()

    pkgdirs = []
    for root, dirs, files in os.walk(args.api):
        dirs.sort()
        if "generated.proto" in files and "testdata" not in root:
            pkgdirs.append(root)
    for rel in APIMACHINERY_PKGS:
        pkgdirs.append(os.path.join(args.apimachinery, rel))
    for rel in APIEXT_PKGS:
        pkgdirs.append(os.path.join(args.apiextensions, rel))
    for rel in AGG_PKGS:
        pkgdirs.append(os.path.join(args.aggregator, rel))

    msgs = {}
    pending_aliases = []
    pkginfo = {}  # proto package -> (pkgdir, group, version, go structs)
    for d in pkgdirs:
        proto = os.path.join(d, "generated.proto")
        if not os.path.exists(proto):
            raise SystemExit("missing %s" % proto)
        package, plist = read_proto(proto)
        aliases = {}
        structs = read_go_structs(d, aliases)
        group = read_group(d)
        version = os.path.basename(d.rstrip("/"))
        pkginfo[package] = (d, group, version, structs)
        pending_aliases.append((structs, aliases))
        for pm in plist:
            msgs[pm.fullname] = pm

    # resolve `type X otherpkg.Y` against the other package's structs
    godirs = {}
    for package, (d, _, _, structs) in pkginfo.items():
        godirs[import_path_of(d, args)] = structs
    for structs, aliases in pending_aliases:
        for name, (imp, target) in aliases.items():
            other = godirs.get(imp)
            if other is not None and target in other:
                structs[name] = other[target]

    names = sorted(msgs)
    index = {n: i for i, n in enumerate(names)}

    out_fields = []  # (msgidx, json, num, type, keytype, flags, submsg)
    msg_rows = []
    kinds = []
    order_rows = []
    nfields_total = 0
    for n in names:
        pm = msgs[n]
        d, group, version, structs = pkginfo[pm.package]
        special = SPECIAL.get(n)
        if special is None and pm.nullable_slice:
            special = "SLICE"
        byno = {f.number: f for f in pm.fields}
        gofields = structs.get(pm.shortname)
        rows = []
        is_kind = False
        if gofields is None:
            if special is None:
                warn("%s: no Go struct; using proto order" % n)
            gofields = [GoField(f.name, "", False, f.name, True, False, False, f.number)
                        for f in pm.fields]
            if special is not None:
                # special messages: their JSON is custom; keep proto names
                pass
        used = set()
        for gf in gofields:
            if gf.proto_num is None:
                if gf.embedded and gf.gotype.lstrip("*").split(".")[-1] == "TypeMeta":
                    rows.append(("", 0, "NONE", "NONE", ["TYPEMETA"], -1))
                    is_kind = True
                continue
            pf = byno.get(gf.proto_num)
            if pf is None:
                warn("%s: Go field %s has protobuf number %d not in proto"
                     % (n, gf.name, gf.proto_num))
                continue
            used.add(pf.number)
            flags = []
            gt = gf.gotype
            if pf.label == "map":
                flags.append("MAP")
            elif pf.label == "repeated":
                flags.append("REPEATED")
            if gt.startswith("*"):
                flags.append("PTR")
            if pf.ptype == "bytes" and pf.label not in ("map", "repeated"):
                flags.append("PTR")  # []byte: encoded only when non-nil
            sub = -1
            if pf.ptype in SCALARS:
                t = SCALARS[pf.ptype]
            else:
                if pf.ptype not in index:
                    raise SystemExit("%s: unknown message type %s" % (n, pf.ptype))
                t = "MESSAGE"
                sub = index[pf.ptype]
                if msgs[pf.ptype].nullable_slice and pf.label == "optional" and "PTR" not in flags:
                    flags.append("PTR")  # named Go slice: nil-able
            if gf.omitempty:
                flags.append("OMITEMPTY")
            if gf.omitzero:
                flags.append("OMITZERO")
            json_name = gf.json_name
            if gf.json_skip:
                json_name = pf.name
                flags.append("NOJSON")
            if gf.embedded and json_name == "" and special is None:
                if t != "MESSAGE" and special is None:
                    raise SystemExit("%s: inline non-message %s" % (n, gf.name))
                flags.append("INLINE")
            kt = "NONE"
            if pf.key_type:
                kt = SCALARS.get(pf.key_type)
                if kt is None:
                    raise SystemExit("%s: map key %s" % (n, pf.key_type))
            rows.append((json_name, pf.number, t, kt, flags, sub))
        for pf in pm.fields:
            if pf.number in used:
                continue
            if special is None:
                warn("%s: proto field %s (%d) has no Go field; appended" % (n, pf.name, pf.number))
            flags = ["OMITEMPTY"]
            if pf.label == "map":
                flags.append("MAP")
            elif pf.label == "repeated":
                flags.append("REPEATED")
            else:
                flags.append("PTR")
            sub = -1
            if pf.ptype in SCALARS:
                t = SCALARS[pf.ptype]
            else:
                t = "MESSAGE"
                sub = index[pf.ptype]
            kt = SCALARS.get(pf.key_type, "NONE") if pf.key_type else "NONE"
            rows.append((pf.name, pf.number, t, kt, flags, sub))
        first = len(out_fields)
        for r in rows:
            out_fields.append(r)
        # field indices (relative) sorted by protobuf number, TYPEMETA excluded
        numorder = sorted((r[1], i) for i, r in enumerate(rows) if "TYPEMETA" not in r[4])
        order_first = len(order_rows)
        order_rows.extend(i for _, i in numorder)
        msg_rows.append((n, first, len(rows), order_first, len(numorder), special or "NONE"))
        nfields_total += len(rows)
        if is_kind and group is not None:
            api_version = version if group == "" else group + "/" + version
            kinds.append((api_version, pm.shortname, index[n]))
            if pm.package == "k8s.io.apimachinery.pkg.apis.meta.v1":
                # meta types are registered in every group; "v1" stands for them
                kinds.append(("meta.k8s.io/v1", pm.shortname, index[n]))
        if pm.package == "k8s.io.apimachinery.pkg.apis.meta.v1" and pm.shortname == "WatchEvent":
            kinds.append(("meta.k8s.io/v1", "WatchEvent", index[n]))

    kinds = sorted(set(kinds))

    def cstr(s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def flagexpr(flags):
        if not flags:
            return "0"
        return "|".join("K8S_F_" + f for f in flags)

    o = []
    o.append("/* k8s_schema_data.c: GENERATED by tools/k8s-schema/gen_schema.py; do not edit.")
    o.append(" *")
    o.append(" * Facts about the Kubernetes API types (message names, protobuf field numbers,")
    o.append(" * JSON names in Go struct order, types, flags), as declared in k8s_schema.h.")
    o.append(" */")
    o.append("/* clang-format off */")
    o.append('#include "k8s_schema.h"')
    o.append("")
    o.append("const struct k8s_field k8s_fields[] = {")
    mi = 0
    starts = {r[1]: r[0] for r in msg_rows}
    for i, r in enumerate(out_fields):
        if i in starts:
            o.append("\t/* %s */" % starts[i])
        json_name, num, t, kt, flags, sub = r
        o.append("\t{%s, %d, K8S_T_%s, K8S_T_%s, %s, %d}," % (cstr(json_name), num, t, kt,
                                                            flagexpr(flags), sub))
    o.append("};")
    o.append("")
    o.append("const uint16_t k8s_field_order[] = {")
    line = "\t"
    for v in order_rows:
        item = "%d," % v
        if len(line) + len(item) > 90:
            o.append(line.rstrip())
            line = "\t"
        line += item + " "
    if line.strip():
        o.append(line.rstrip())
    o.append("};")
    o.append("")
    o.append("const struct k8s_msg k8s_msgs[] = {")
    for n, first, cnt, ofirst, ocnt, special in msg_rows:
        o.append("\t{%s, %d, %d, %d, %d, K8S_S_%s}," % (cstr(n), first, cnt, ofirst, ocnt, special))
    o.append("};")
    o.append("const size_t k8s_n_msgs = sizeof(k8s_msgs) / sizeof(k8s_msgs[0]);")
    o.append("")
    o.append("const struct k8s_kind k8s_kinds[] = {")
    for av, k, idx in kinds:
        o.append("\t{%s, %s, %d}," % (cstr(av), cstr(k), idx))
    o.append("};")
    o.append("const size_t k8s_n_kinds = sizeof(k8s_kinds) / sizeof(k8s_kinds[0]);")
    o.append("")
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(o))
    print("gen_schema: %d messages, %d fields, %d kinds" % (len(msg_rows), nfields_total,
                                                             len(kinds)), file=sys.stderr)


if __name__ == "__main__":
    main()
