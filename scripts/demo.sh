#!/usr/bin/env bash
# `make run` until the devnet exists: the key workflow end to end, with the real
# `lifeline` binary, in a temporary folder that is removed afterwards.
set -euo pipefail

cargo build --locked -q -p lifeline
bin="${CARGO_TARGET_DIR:-target}/debug/lifeline"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export LIFELINE_PASSPHRASE="demo passphrase, never use for real keys"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "1. Alice and Bob each create an identity (an ed25519 key and a signed X25519 prekey)"
show "$bin" --data-dir "$work/alice" key generate
"$bin" --data-dir "$work/bob" key generate >/dev/null
show "$bin" --data-dir "$work/bob" key show

step "2. Bob hands Alice his contact card (his signed prekey)"
"$bin" --data-dir "$work/bob" key card >"$work/bob.card"
cut -c1-72 "$work/bob.card" | sed 's/$/.../'

step "3. Alice seals a message to Bob. Relays would see only the recipient, never the sender or the text"
echo 'Water and blankets at the north school gym. - Alice' \
  | show "$bin" --data-dir "$work/alice" seal --to "$work/bob.card" >"$work/message.env"
echo "envelope: $(wc -c <"$work/message.env") characters"

step "4. Bob opens it and sees who sent it (check the fingerprint with Alice by voice)"
show "$bin" --data-dir "$work/bob" open "$work/message.env"

step "5. Nobody else can open it"
"$bin" --data-dir "$work/alice" open "$work/message.env" || true

step "6. Bob rotates his prekey; the old one still opens waiting messages during its grace period"
show "$bin" --data-dir "$work/bob" key rotate-prekey
show "$bin" --data-dir "$work/bob" open "$work/message.env"

printf '\nDone. Everything was in %s and has been removed.\n' "$work"
