#!/usr/bin/env python3
"""Summarises a docker image archive (as `buildctl --output type=docker` writes it) into the
golden.json format of testdata/buildkit (see testdata/buildkit/README.md): what the build
added on top of its base image, without timestamps.

usage: golden-summary.py IMAGE.tar BASE.tar > golden.json

BASE.tar is the base image (busybox:local) as a docker archive; the leading layers of IMAGE
that are BASE's layers are the base, and only what the build changed is recorded. The Rust
side of this format is tests/it/buildkit_goldens.rs; keep the two in step.
"""
import hashlib
import io
import json
import sys
import tarfile

CONFIG_FIELDS = [
    "Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
    "Labels", "StopSignal", "Healthcheck", "Shell", "OnBuild",
]


def read_archive(path):
    """(config dict, [layer bytes]) of the single image in a docker archive."""
    with tarfile.open(path, "r:*") as t:
        manifest = json.load(t.extractfile("manifest.json"))
        if len(manifest) != 1:
            sys.exit(f"{path}: expected one image, found {len(manifest)}")
        m = manifest[0]
        config = json.load(t.extractfile(m["Config"]))
        layers = [t.extractfile(name).read() for name in m["Layers"]]
    return config, layers


def norm(name):
    while name.startswith("./"):
        name = name[2:]
    name = name.strip("/")
    return "/" + name if name not in ("", ".") else "/"


def apply_layer(state, data, listing):
    """Applies one layer tar (OCI whiteouts) to state {path: entry}; appends the layer's
    non-directory entries to listing."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
        members = t.getmembers()
        # Opaque markers hide the lower layers' children before this layer's entries land.
        for m in members:
            p = norm(m.name)
            base = p.rsplit("/", 1)[1]
            if base == ".wh..wh..opq":
                d = p.rsplit("/", 1)[0] or "/"
                prefix = d.rstrip("/") + "/"
                for k in [k for k in state if k.startswith(prefix)]:
                    del state[k]
                listing.append(f"{d} opaque")
        for m in members:
            p = norm(m.name)
            parent, base = p.rsplit("/", 1)
            parent = parent or "/"
            if base == ".wh..wh..opq":
                continue
            if base.startswith(".wh."):
                gone = (parent.rstrip("/") + "/" + base[4:])
                for k in [k for k in state if k == gone or k.startswith(gone + "/")]:
                    del state[k]
                listing.append(f"{gone} whiteout")
                continue
            if p == "/":
                continue
            # A new entry replaces what was there (a directory over a directory keeps its children).
            old = state.get(p)
            if old is not None and not (old["type"] == "dir" and m.isdir()):
                for k in [k for k in state if k.startswith(p + "/")]:
                    del state[k]
            e = {"mode": m.mode & 0o7777, "uid": m.uid, "gid": m.gid}
            if m.isdir():
                e["type"] = "dir"
            elif m.issym():
                e["type"] = "symlink"
                e["target"] = m.linkname
                listing.append(f"{p} symlink -> {m.linkname}")
            elif m.islnk():
                target = norm(m.linkname)
                src = state.get(target)
                if src is None:
                    sys.exit(f"hard link {p} to missing {target}")
                e = dict(src)
                listing.append(f"{p} hardlink -> {target}")
            elif m.isreg():
                body = t.extractfile(m).read()
                e["type"] = "file"
                e["size"] = len(body)
                e["sha256"] = hashlib.sha256(body).hexdigest()
                listing.append(f"{p} file")
            else:
                e["type"] = "other"
                listing.append(f"{p} other")
            state[p] = e


def describe(e, base_digests):
    s = f"{e['type']} {e['mode']:04o} {e['uid']}:{e['gid']}"
    if e["type"] == "symlink":
        s += f" -> {e['target']}"
    elif e["type"] == "file":
        same = base_digests.get(e["sha256"])
        if same is not None:
            s += f" content=base:{same}"
        else:
            s += f" size={e['size']} sha256={e['sha256'][:16]}"
    return s


def present(v):
    return v not in (None, [], {}, "")


def main():
    image, base = sys.argv[1], sys.argv[2]
    config, layers = read_archive(image)
    base_config, base_layers = read_archive(base)
    diff_ids = config.get("rootfs", {}).get("diff_ids") or []
    base_ids = base_config.get("rootfs", {}).get("diff_ids") or []
    n = len(base_ids) if diff_ids[: len(base_ids)] == base_ids else 0
    history = config.get("history") or []
    skip_history = len(base_config.get("history") or []) if n else 0

    # Content equal to a file of the busybox base is named by that file, whether or not the
    # image is built on it (FROM scratch + COPY --from), so no golden depends on the host's busybox.
    base_files = {}
    for data in base_layers:
        apply_layer(base_files, data, [])
    base_digests = {}
    for p in sorted(base_files):
        e = base_files[p]
        if e["type"] == "file":
            base_digests.setdefault(e["sha256"], p)
    state = {}
    for data in layers[:n]:
        apply_layer(state, data, [])
    base_state = dict(state)
    added = []
    for data in layers[n:]:
        listing = []
        apply_layer(state, data, listing)
        added.append(sorted(listing))

    tree = []
    for p in sorted(set(state) | set(base_state)):
        if p not in state:
            tree.append(f"{p} removed")
            continue
        now = describe(state[p], base_digests)
        if p not in base_state or describe(base_state[p], base_digests) != now:
            tree.append(f"{p} {now}")

    c = config.get("config") or {}
    summary_config = {k: c[k] for k in CONFIG_FIELDS if present(c.get(k))}
    if present(config.get("author")):
        summary_config["Author"] = config["author"]
    out = {
        "config": summary_config,
        "history": ["empty" if h.get("empty_layer") else "layer" for h in history[skip_history:]],
        "layers": added,
        "tree": tree,
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
