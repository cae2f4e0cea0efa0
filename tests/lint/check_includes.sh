#!/usr/bin/env bash
# Module boundaries (DESIGN.md section 6, STYLE.md convention 1):
# - outside its module, a module is reached only through "<mod>/<mod>.h"
#   (base/ is the exception: all its headers are public);
# - dependencies point one way: base <- {transport, consensus, cbn, gvae,
#   actuate} <- node, and gvae/ reads cbn/cbn.h (windows, the CBN);
# - third-party libraries stay in the module that owns them.
set -u
src=$1
cd "$src" || exit 1
fail=0 n=0
report() { echo "$1"; fail=1; }

for f in base/*.[ch] transport/*.[ch] consensus/*.[ch] cbn/*.[ch] gvae/*.[ch] \
         actuate/*.[ch] node/*.[ch]; do
    [ -e "$f" ] || continue
    n=$((n + 1))
    mod=${f%%/*}
    while IFS= read -r inc; do
        target=${inc%%/*}
        [ "$target" = "$inc" ] && continue  # generated headers (sm_build.h)
        if [ "$target" != "$mod" ] && [ "$target" != base ] &&
           [ "$inc" != "$target/$target.h" ]; then
            report "$f includes $inc: use only $target/$target.h outside $target/"
        fi
        case "$mod:$target" in
            base:base|node:*) ;;
            gvae:cbn) [ "$inc" = cbn/cbn.h ] ||
                report "$f: gvae/ may use only cbn/cbn.h of cbn/ ($inc)" ;;
            base:*) report "$f: base/ may include only base/ ($inc)" ;;
            *:base) ;;
            *:"$mod") ;;
            *) report "$f: $mod/ may include only base/ and itself ($inc)" ;;
        esac
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
    while IFS= read -r inc; do
        owner=
        case "$inc" in
            nng/*|sodium*) owner=transport ;;
            msgpack*) owner=transport
                # gvae/ writes its checkpoints with msgpack too.
                [ "$mod" = gvae ] && owner=gvae ;;
            cblas*|openblas*) owner=gvae ;;
            raft*|lz4*) owner=consensus ;;
            http_parser.h|zlib.h) owner=node ;;
        esac
        if [ -n "$owner" ] && [ "$owner" != "$mod" ]; then
            report "$f includes <$inc>: only $owner/ may use that library"
        fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*<\([^>]*\)>.*/\1/p' "$f")
done
if grep -l 'include <cblas.h>' gvae/*.c 2>/dev/null | grep -qv '^gvae/mat.c$'; then
    report "only gvae/mat.c may include cblas.h"
fi
echo "$n files checked"
[ "$n" -gt 0 ] && exit $fail
