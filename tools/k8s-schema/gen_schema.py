#!/usr/bin/env python3
"""gen_schema.py: build etcdfs' compact Kubernetes schema table (src/k8s/k8s_schema_data.c).

Input: four upstream repositories, as bare git directories (read at each release
tag with git ls-tree / cat-file, nothing checked out) or, with --snapshot, as
plain directories of one snapshot:

    --api             k8s.io/api                     (every */*/generated.proto + types*.go)
    --apimachinery    k8s.io/apimachinery            (pkg/apis/meta/v1, pkg/runtime,
                                                      pkg/api/resource, pkg/util/intstr)
    --apiextensions   k8s.io/apiextensions-apiserver (pkg/apis/apiextensions/v1, v1beta1)
    --aggregator      k8s.io/kube-aggregator         (pkg/apis/apiregistration/v1, v1beta1)

From each package of each release it reads two kinds of facts:
  * generated.proto: message names, field numbers, protobuf types, repeated/map;
  * the Go type declarations (*.go): field order, JSON names, omitempty/omitzero,
    Go pointer-ness and embedded (inline) structs, which TypeMeta marks as a kind,
    and the +k8s:prerelease-lifecycle-gen tags that say when a kind stops being served.
The group name comes from `+groupName=` in doc.go or `GroupName = ".."` in register.go.

The releases (default: every kubernetes-1.N.0 tag from 1.8, then HEAD) are merged
into one union schema by the rules of merge() below; --report writes every
conflict found. Output: a C file with three tables (messages, fields in Go/JSON
order, kinds), in the format declared by src/k8s/k8s_schema.h. Only facts are
emitted; no upstream text is copied. Python 3 standard library and git only.

Usage (see tools/k8s-schema/README.md):
    tools/k8s-schema/gen_schema.py --api A.git --apimachinery M.git \
        --apiextensions E.git --aggregator G.git [--tags T1,T2,...] \
        [--report FILE] -o src/k8s/k8s_schema_data.c
"""

import argparse
import os
import re
import subprocess
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
# meta/v1 Fields (1.14, 1.15 managedFields[].fields): JSON is its map, null when nil
SPECIAL["k8s.io.apimachinery.pkg.apis.meta.v1.Fields"] = "MAPWRAP"
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


def read_proto(tree, path):
    text = strip_block_comments(tree.read(path))
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
    if t.startswith("k8s.io."):
        # releases before 1.9 name other packages' messages without the leading dot
        return t
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


def read_go_structs(tree, pkgdir, aliases):
    structs = {}
    for fn in tree.listdir(pkgdir):
        if not fn.endswith(".go") or fn.endswith("_test.go") or fn.startswith("zz_generated"):
            continue
        if fn in ("generated.pb.go",):
            continue
        text = tree.read(pkgdir + "/" + fn)
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


def read_lifecycle(tree, pkgdir):
    """{struct: minor release that stops serving it} from the
    `+k8s:prerelease-lifecycle-gen:removed=1.N` tag above a type, or
    `deprecated=1.N` plus three minors (the rule of prerelease-lifecycle-gen)."""
    out = {}
    for fn in tree.listdir(pkgdir):
        if not fn.startswith("types") or not fn.endswith(".go"):
            continue
        tags = {}
        for line in tree.read(pkgdir + "/" + fn).split("\n"):
            line = line.strip()
            m = re.match(r"//\s*\+k8s:prerelease-lifecycle-gen:(removed|deprecated)=1\.(\d+)", line)
            if m:
                tags[m.group(1)] = int(m.group(2))
                continue
            if line.startswith("//") or not line:
                continue
            m = re.match(r"type\s+(\w+)\s+struct", line)
            if m and tags:
                out[m.group(1)] = tags.get("removed", tags.get("deprecated", 0) + 3)
            tags = {}
    return out


def read_group(tree, pkgdir):
    for fn in ("doc.go", "register.go"):
        p = pkgdir + "/" + fn
        if not tree.exists(p):
            continue
        text = tree.read(p)
        m = re.search(r"\+groupName=([\w.\-]*)", text)
        if m:
            return m.group(1)
        m = re.search(r'GroupName\s*=\s*"([^"]*)"', text)
        if m:
            return m.group(1)
    return None


# ---------------------------------------------------------------------------

class Tree:
    """What both kinds of source tree share: self.dirs maps each directory to its sorted
    file names; subclasses fill it and read files."""

    def listdir(self, d):
        return self.dirs.get(d, [])

    def exists(self, path):
        d, f = os.path.split(path)
        return f in self.dirs.get(d, [])


class FsTree(Tree):
    """A snapshot directory (a checkout or `git archive` tree)."""

    def __init__(self, root):
        self.root = root
        self.label = root
        self.dirs = {}
        for d, _, files in os.walk(root):
            rel = os.path.relpath(d, root)
            self.dirs["" if rel == "." else rel] = sorted(files)

    def read(self, path):
        with open(os.path.join(self.root, path), encoding="utf-8") as f:
            return f.read()


class GitTree(Tree):
    """One revision of a (bare) git repository, read with git ls-tree / cat-file."""

    _catfile = {}

    def __init__(self, gitdir, rev):
        self.gitdir = gitdir
        self.rev = rev
        res = subprocess.run(["git", "-C", gitdir, "rev-parse", "--verify", "-q",
                              rev + "^{commit}"], capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit("gen_schema: %s has no revision %s" % (gitdir, rev))
        self.commit = res.stdout.strip()
        self.label = "%s@%s" % (os.path.basename(gitdir.rstrip("/")), rev)
        out = subprocess.run(["git", "-C", gitdir, "ls-tree", "-r", "-z", "--name-only",
                              self.commit], check=True, capture_output=True).stdout
        self.dirs = {}
        for p in out.decode().split("\0"):
            if p:
                d, f = os.path.split(p)
                self.dirs.setdefault(d, []).append(f)
        for v in self.dirs.values():
            v.sort()

    def read(self, path):
        proc = GitTree._catfile.get(self.gitdir)
        if proc is None:
            proc = subprocess.Popen(["git", "-C", self.gitdir, "cat-file", "--batch"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            GitTree._catfile[self.gitdir] = proc
        proc.stdin.write(("%s:%s\n" % (self.commit, path)).encode())
        proc.stdin.flush()
        head = proc.stdout.readline().decode().split()
        if len(head) != 3:
            raise SystemExit("%s: cannot read %s" % (self.label, path))
        data = proc.stdout.read(int(head[2]))
        proc.stdout.read(1)
        return data.decode("utf-8")


REPO_PREFIX = {"api": "k8s.io/api", "apimachinery": "k8s.io/apimachinery",
               "apiextensions": "k8s.io/apiextensions-apiserver",
               "aggregator": "k8s.io/kube-aggregator"}


def package_dirs(trees):
    """(repository key, package dir) of every package to read in one release."""
    out = []
    api = trees["api"]
    for d in sorted(api.dirs):
        if "generated.proto" in api.dirs[d] and "testdata" not in d.split("/"):
            out.append(("api", d))
    for key, pkgs in (("apimachinery", APIMACHINERY_PKGS), ("apiextensions", APIEXT_PKGS),
                      ("aggregator", AGG_PKGS)):
        for d in pkgs:
            if trees[key].exists(d + "/generated.proto"):
                out.append((key, d))
            elif key == "apimachinery":
                raise SystemExit("%s: missing %s/generated.proto" % (trees[key].label, d))
    return out


class Release:
    """The schema facts of one release: per message its rows in Go order, and its kinds.

    A row is (json, number, type, key type, flags tuple, sub-message name or None);
    the TypeMeta pseudo field has number 0."""

    def __init__(self, name):
        self.name = name
        self.msgs = {}  # message name -> (rows, special)
        self.kinds = set()  # (apiVersion, kind, message name)
        self.unserved = {}  # (apiVersion, kind) -> minor release that stops serving it


def extract(name, trees):
    rel = Release(name)
    msgs = {}
    pending_aliases = []
    pkginfo = {}  # proto package -> (group, version, go structs)
    godirs = {}
    for key, d in package_dirs(trees):
        tree = trees[key]
        package, plist = read_proto(tree, d + "/generated.proto")
        aliases = {}
        structs = read_go_structs(tree, d, aliases)
        pkginfo[package] = (read_group(tree, d), os.path.basename(d), structs,
                            read_lifecycle(tree, d))
        godirs[REPO_PREFIX[key] + "/" + d] = structs
        pending_aliases.append((structs, aliases))
        for pm in plist:
            msgs[pm.fullname] = pm
    # resolve `type X otherpkg.Y` against the other package's structs
    for structs, aliases in pending_aliases:
        for alias, (imp, target) in aliases.items():
            other = godirs.get(imp)
            if other is not None and target in other:
                structs[alias] = other[target]

    for n in sorted(msgs):
        pm = msgs[n]
        group, version, structs, lifecycle = pkginfo[pm.package]
        special = SPECIAL.get(n)
        if special is None and pm.nullable_slice:
            special = "SLICE"
        byno = {f.number: f for f in pm.fields}
        gofields = structs.get(pm.shortname)
        rows = []
        is_kind = False
        if gofields is None:
            if special is None:
                warn("%s: %s: no Go struct; using proto order" % (name, n))
            # special messages: their JSON is custom; keep proto names
            gofields = [GoField(f.name, "", False, f.name, True, False, False, f.number)
                        for f in pm.fields]
        used = set()
        for gf in gofields:
            if gf.proto_num is None:
                if gf.embedded and gf.gotype.lstrip("*").split(".")[-1] == "TypeMeta":
                    rows.append(("", 0, "NONE", "NONE", ("TYPEMETA",), None))
                    is_kind = True
                continue
            pf = byno.get(gf.proto_num)
            if pf is None:
                warn("%s: %s: Go field %s has protobuf number %d not in proto"
                     % (name, n, gf.name, gf.proto_num))
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
            sub = None
            if pf.ptype in SCALARS:
                t = SCALARS[pf.ptype]
            else:
                if pf.ptype not in msgs:
                    raise SystemExit("%s: %s: unknown message type %s" % (name, n, pf.ptype))
                t = "MESSAGE"
                sub = pf.ptype
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
                if t != "MESSAGE":
                    raise SystemExit("%s: %s: inline non-message %s" % (name, n, gf.name))
                flags.append("INLINE")
            kt = "NONE"
            if pf.key_type:
                kt = SCALARS.get(pf.key_type)
                if kt is None:
                    raise SystemExit("%s: %s: map key %s" % (name, n, pf.key_type))
            rows.append((json_name, pf.number, t, kt, tuple(flags), sub))
        for pf in pm.fields:
            if pf.number in used:
                continue
            if special is None:
                warn("%s: %s: proto field %s (%d) has no Go field; appended"
                     % (name, n, pf.name, pf.number))
            flags = ["OMITEMPTY"]
            if pf.label == "map":
                flags.append("MAP")
            elif pf.label == "repeated":
                flags.append("REPEATED")
            else:
                flags.append("PTR")
            sub = None
            if pf.ptype in SCALARS:
                t = SCALARS[pf.ptype]
            else:
                t = "MESSAGE"
                sub = pf.ptype
            kt = SCALARS.get(pf.key_type, "NONE") if pf.key_type else "NONE"
            rows.append((pf.name, pf.number, t, kt, tuple(flags), sub))
        rel.msgs[n] = (rows, special or "NONE")
        if is_kind and group is not None:
            api_version = version if group == "" else group + "/" + version
            rel.kinds.add((api_version, pm.shortname, n))
            if pm.shortname in lifecycle:
                rel.unserved[(api_version, pm.shortname)] = lifecycle[pm.shortname]
            if pm.package == "k8s.io.apimachinery.pkg.apis.meta.v1":
                # meta types are registered in every group; "v1" stands for them
                rel.kinds.add(("meta.k8s.io/v1", pm.shortname, n))
        if pm.package == "k8s.io.apimachinery.pkg.apis.meta.v1" and pm.shortname == "WatchEvent":
            rel.kinds.add(("meta.k8s.io/v1", "WatchEvent", n))
    return rel


# ---------------------------------------------------------------------------
# The union of all releases

# Flags that only say how Go writes a value (JSON omission, pointer-ness); a change
# of these between releases is a trait change, not a conflict of meaning.
TRAIT_FLAGS = {"PTR", "OMITEMPTY", "OMITZERO"}


def describe(row):
    json_name, num, t, kt, flags, sub = row
    ty = sub if sub else t.lower()
    if "MAP" in flags:
        ty = "map<%s,%s>" % (kt.lower(), ty)
    elif "REPEATED" in flags:
        ty = "repeated " + ty
    return "%s=%d %s [%s]" % (json_name or "(inline)", num, ty, ",".join(sorted(flags)))


class Report:
    """Merge findings, each listed once with the releases it was seen in."""

    def __init__(self):
        self.items = {}  # (category, text) -> [release tags]

    def add(self, category, text, rel):
        self.items.setdefault((category, text), [])
        if rel not in self.items[(category, text)]:
            self.items[(category, text)].append(rel)

    def lines(self):
        out = []
        for (cat, text), rels in sorted(self.items.items()):
            out.append("%s: %s [%s]" % (cat, text, ", ".join(sorted(rels, key=tag_order))))
        return out


def tag_order(tag):
    m = re.match(r"kubernetes-1\.(\d+)\.", tag)
    return int(m.group(1)) if m else 1000


def merge(releases, report):
    """Union of releases (oldest first). Returns {message: [rows, special]} and the kinds
    {(apiVersion, kind): (message, last release)}.

    Rules (docs/k8s.md, "Union schema"):
      * a message is defined by the newest release that has it;
      * a field (by protobuf number) that only older releases of a message define is
        added with the traits of the newest release that had it, placed after the
        field that preceded it there, and flagged OLD: shown only when the bytes have
        it and written only when the text has it, so data of newer releases decodes
        and encodes exactly as before;
      * a field whose JSON name or Go traits (pointer, omitempty) changed keeps the
        newest definition;
      * a field whose message type was renamed (same number, same JSON name, e.g.
        Handler -> LifecycleHandler) keeps the newest type, and the fields that only
        the old type had are grafted into the new type as OLD fields, recursively;
      * any other difference of type or shape keeps the newest definition (none found);
      * each field records the first and last release that had it (since/until), so a
        new object can be written as an older release wrote it.
    Kinds: the union of all releases; an old kind the newest release reads through
    its meta.k8s.io/v1 fallback is left out.
    """
    union = {}
    present = {}  # (message, field number) -> tags of the releases that had it

    def seen(n, rows, rel):
        for r in rows:
            present.setdefault((n, r[1]), set()).add(rel.tag)

    def merge_rows(n, rows, rel, grafted_from=None):
        urows = union[n][0]
        special = union[n][1]
        seen(n, rows, rel)
        bynum = {r[1]: r for r in urows}
        prev = None
        for r in rows:
            have = bynum.get(r[1])
            if have is None and "TYPEMETA" in r[4]:
                # a struct that stopped being a kind (NodeConfigSource in 1.10)
                report.add("no-longer-kind", n, rel.tag)
                continue
            if have is None:
                pos = urows.index(bynum[prev]) + 1 if prev is not None else 0
                new = r[:4] + (tuple(f for f in r[4] if f != "OLD") + ("OLD",),) + r[5:]
                urows.insert(pos, new)
                bynum[r[1]] = new
                report.add("old-field", "%s: %s%s" % (
                    n, describe(r), " (from " + grafted_from + ")" if grafted_from else ""),
                    rel.tag)
                prev = r[1]
                continue
            prev = r[1]
            hflags = set(have[4]) - {"OLD"}
            rflags = set(r[4]) - {"OLD"}
            if special != "NONE":
                # custom JSON form: only the protobuf facts matter
                if have[2:4] != r[2:4] or have[5] != r[5]:
                    report.add("conflict", "%s: field %d: %s, newest %s" % (
                        n, r[1], describe(r), describe(have)), rel.tag)
                continue
            same_shape = hflags - TRAIT_FLAGS == rflags - TRAIT_FLAGS
            if have[2:4] == r[2:4] and same_shape and have[5] != r[5] \
                    and have[5] and r[5]:
                report.add("renamed-type", "%s: field %d (%s): %s, newest %s; old-only fields "
                           "grafted" % (n, r[1], have[0], r[5], have[5]), rel.tag)
                graft(have[5], r[5], rel)
            elif have[2:4] != r[2:4] or not same_shape or have[5] != r[5]:
                report.add("conflict", "%s: field %d: %s, newest %s; newest kept" % (
                    n, r[1], describe(r), describe(have)), rel.tag)
            if have[0] != r[0]:
                report.add("renamed-json", "%s: field %d: JSON name %s, newest %s; newest kept"
                           % (n, r[1], r[0] or "(inline)", have[0] or "(inline)"), rel.tag)
            if hflags != rflags and "OLD" not in have[4]:
                report.add("trait", "%s: field %d (%s): [%s], newest [%s]; newest kept" % (
                    n, r[1], have[0], ",".join(sorted(rflags)), ",".join(sorted(hflags))),
                    rel.tag)

    grafting = set()

    def graft(new, old, rel):
        key = (new, old, rel.tag)
        if key in grafting or old not in rel.msgs or new not in union:
            return
        grafting.add(key)
        merge_rows(new, rel.msgs[old][0], rel, grafted_from=old)

    for rel in reversed(releases):
        for n, (rows, special) in rel.msgs.items():
            if n not in union:
                union[n] = [list(rows), special]
                seen(n, rows, rel)
                continue
            if special != union[n][1]:
                report.add("conflict", "%s: JSON form %s, newest %s; newest kept"
                           % (n, special, union[n][1]), rel.tag)
            merge_rows(n, rows, rel)
    # a JSON name used by two field numbers of one message would be ambiguous
    for n, (rows, _) in union.items():
        seen = {}
        for r in rows:
            if r[0] and "INLINE" not in r[4] and "NOJSON" not in r[4]:
                if r[0] in seen:
                    report.add("conflict", "%s: JSON name %s has numbers %d and %d"
                               % (n, r[0], seen[r[0]], r[1]), "union")
                seen[r[0]] = r[1]
    kinds = {}
    for rel in releases:
        for av, kind, n in rel.kinds:
            k = (av, kind)
            if k in kinds and kinds[k][0] != n:
                report.add("conflict", "kind %s %s is %s, before %s; newest kept"
                           % (av, kind, n, kinds[k][0]), rel.tag)
            kinds[k] = (n, rel.tag)
    # Old releases had core/v1 DeleteOptions and ListOptions messages; the newest
    # release finds such kinds through its meta.k8s.io/v1 fallback, which wins.
    newest_tag = releases[-1].tag
    live_av = {av for (av, _), (_, last) in kinds.items() if last == newest_tag}
    live_meta = {k for (av, k), (_, last) in kinds.items()
                 if av == "meta.k8s.io/v1" and last == newest_tag}
    for (av, k), (n, last) in list(kinds.items()):
        if last != newest_tag and av in live_av and k in live_meta:
            report.add("meta-shadowed", "kind %s %s (%s) left out: the newest release reads "
                       "it as meta.k8s.io/v1 %s" % (av, k, n, k), last)
            del kinds[(av, k)]
    # per field the first and last release that had it, for encoding as a release
    order = [rel.tag for rel in releases]
    for n, (rows, _) in union.items():
        for i, r in enumerate(rows):
            tags = present.get((n, r[1]), set())
            idx = sorted(order.index(t) for t in tags)
            since = "0" if not idx or idx[0] == 0 else release_version(order[idx[0]]) or "255"
            until = "0" if not idx or idx[-1] == len(order) - 1 else release_version(order[idx[-1]])
            rows[i] = r + (int(since.split(".")[-1]), int((until or "0").split(".")[-1]))
    return union, kinds


def release_version(tag):
    m = re.match(r"kubernetes-(\d+\.\d+)\.\d+$", tag)
    return m.group(1) if m else None


def write_c(path, union, kinds, releases, kind_removed):
    names = sorted(union)
    index = {n: i for i, n in enumerate(names)}

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
    o.append(" * JSON names in Go struct order, types, flags), as declared in k8s_schema.h:")
    o.append(" * the union of these releases (k8s.io/api, apimachinery, apiextensions-apiserver,")
    o.append(" * kube-aggregator commits):")
    for rel in releases:
        o.append(" *   %s" % rel.name)
    o.append(" */")
    o.append("/* clang-format off */")
    o.append('#include "k8s_schema.h"')
    o.append("")
    o.append("const struct k8s_field k8s_fields[] = {")
    order_rows = []
    msg_rows = []
    nfields = 0
    for n in names:
        rows, special = union[n]
        o.append("\t/* %s */" % n)
        for json_name, num, t, kt, flags, sub, since, until in rows:
            o.append("\t{%s, %d, K8S_T_%s, K8S_T_%s, %s, %d, %d, %d}," % (
                cstr(json_name), num, t, kt, flagexpr(flags), index[sub] if sub else -1,
                since, until))
        numorder = sorted((r[1], i) for i, r in enumerate(rows) if "TYPEMETA" not in r[4])
        msg_rows.append((n, nfields, len(rows), len(order_rows), len(numorder), special))
        order_rows.extend(i for _, i in numorder)
        nfields += len(rows)
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
        o.append("\t{%s, %d, %d, %d, %d, K8S_S_%s}," % (cstr(n), first, cnt, ofirst, ocnt,
                                                        special))
    o.append("};")
    o.append("const size_t k8s_n_msgs = sizeof(k8s_msgs) / sizeof(k8s_msgs[0]);")
    o.append("")
    o.append("const struct k8s_kind k8s_kinds[] = {")
    for (av, k) in sorted(kinds):
        n, last = kinds[(av, k)]
        rm = kind_removed.get((av, k))
        o.append("\t{%s, %s, %d, %s}," % (cstr(av), cstr(k), index[n],
                                           cstr(rm) if rm else "NULL"))
    o.append("};")
    o.append("const size_t k8s_n_kinds = sizeof(k8s_kinds) / sizeof(k8s_kinds[0]);")
    o.append("")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(o))
    return len(msg_rows), nfields, len(kinds)


def default_tags(gitdir):
    """kubernetes-1.8.0 and every later kubernetes-1.N.0 tag, oldest first."""
    out = subprocess.run(["git", "-C", gitdir, "tag", "--list", "kubernetes-1.*.0"],
                         check=True, capture_output=True, text=True).stdout.split()
    tags = [t for t in out if re.match(r"kubernetes-1\.\d+\.0$", t)]
    tags = [t for t in tags if int(t.split(".")[1]) >= 8]
    return sorted(tags, key=lambda t: int(t.split(".")[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--api", required=True)
    ap.add_argument("--apimachinery", required=True)
    ap.add_argument("--apiextensions", required=True)
    ap.add_argument("--aggregator", required=True)
    ap.add_argument("--tags", default=None,
                    help="comma-separated git revisions, oldest first, the last one the "
                    "newest (default: every kubernetes-1.N.0 tag from 1.8, then HEAD); "
                    "the four options are then git directories")
    ap.add_argument("--snapshot", action="store_true",
                    help="the four options are plain directories of one snapshot")
    ap.add_argument("--report", default=None, help="write the merge report here")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    repos = {"api": args.api, "apimachinery": args.apimachinery,
             "apiextensions": args.apiextensions, "aggregator": args.aggregator}

    releases = []
    if args.snapshot:
        rel = extract("snapshot", {k: FsTree(v) for k, v in repos.items()})
        rel.tag = "snapshot"
        releases.append(rel)
    else:
        tags = args.tags.split(",") if args.tags else default_tags(args.api) + ["HEAD"]
        for tag in tags:
            trees = {k: GitTree(v, tag) for k, v in repos.items()}
            name = "%s (%s)" % (tag, " ".join("%s %s" % (k, t.commit[:12])
                                              for k, t in trees.items()))
            rel = extract(name, trees)
            rel.tag = tag
            releases.append(rel)
            print("gen_schema: %s: %d messages, %d kinds" % (tag, len(rel.msgs), len(rel.kinds)),
                  file=sys.stderr)
    # a kind whose last release is not the newest was removed in the next one
    removed_in = {}
    for i, rel in enumerate(releases[:-1]):
        v = release_version(releases[i + 1].tag)
        if v:
            removed_in[rel.tag] = v
    report = Report()
    union, kinds = merge(releases, report)
    # A kind is removed in the first release that stopped serving it (its
    # prerelease-lifecycle tags) or dropped its types from k8s.io/api, whichever
    # came first; a serving end after the newest release tag does not count yet.
    newest_minor = max([int(release_version(r.tag).split(".")[1]) for r in releases
                        if release_version(r.tag)] or [0])
    bytag = {r.tag: r for r in releases}
    kind_removed = {}
    for (av, k), (n, last) in sorted(kinds.items()):
        cands = []
        if last in removed_in:
            cands.append((int(removed_in[last].split(".")[1]), "types dropped"))
        unserved = bytag[last].unserved.get((av, k))
        if unserved and unserved <= newest_minor:
            cands.append((unserved, "not served"))
        if cands:
            minor, why = min(cands)
            kind_removed[(av, k)] = "1.%d" % minor
            report.add("removed-kind", "%s %s (%s): removed in 1.%d (%s)" % (
                av, k, n, minor, ", ".join("%s in 1.%d" % (w, v) for v, w in sorted(cands))),
                last)
    nm, nf, nk = write_c(args.output, union, kinds, releases, kind_removed)
    lines = report.lines()
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    counts = {}
    for line in lines:
        counts[line.split(":")[0]] = counts.get(line.split(":")[0], 0) + 1
    print("gen_schema: %d messages, %d fields, %d kinds; %s" % (
        nm, nf, nk, ", ".join("%d %s" % (v, k) for k, v in sorted(counts.items()))),
        file=sys.stderr)


if __name__ == "__main__":
    main()
