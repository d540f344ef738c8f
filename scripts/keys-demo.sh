#!/usr/bin/env bash
# The offline key workflow end to end, with the real `lifeline` binary, in a
# temporary folder that is removed afterwards: identities, a contact card, a
# sealed envelope that only its recipient opens, a prekey rotation.
# (`make run` shows the network: `lifeline devnet`.)
set -euo pipefail

cargo build --locked -q -p lifeline
bin="${CARGO_TARGET_DIR:-target}/debug/lifeline"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export LIFELINE_PASSPHRASE="demo passphrase, never use for real keys"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*" >&2; "$@"; }

step "1. Alice and Bob each create an identity (an ed25519 key and a signed X25519 prekey)"
show "$bin" --data-dir "$work/alice" key generate
"$bin" --data-dir "$work/bob" key generate >/dev/null
show "$bin" --data-dir "$work/bob" key show

step "2. Bob hands Alice his contact card (his signed prekey)"
"$bin" --data-dir "$work/bob" key card >"$work/bob.card"
cut -c1-72 "$work/bob.card" | sed 's/$/.../'

text='Water and blankets at the north school gym. - Alice'
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }

step "3. Alice seals a message to Bob. Relays would see only the recipient, never the sender or the text"
echo "$text" | show "$bin" --data-dir "$work/alice" seal --to "$work/bob.card" >"$work/message.env"
echo "envelope: $(wc -c <"$work/message.env") characters"

step "4. Bob opens it and sees who sent it (check the fingerprint with Alice by voice)"
opened="$(show "$bin" --data-dir "$work/bob" open "$work/message.env")"
printf '%s\n' "$opened"
[ "$opened" = "$text" ] || fail "Bob read something other than what Alice sent"

step "5. Nobody else can open it"
if "$bin" --data-dir "$work/alice" open "$work/message.env"; then
  fail "someone other than Bob opened Bob's message"
fi

step "6. Bob rotates his prekey; the old one still opens waiting messages during its grace period"
show "$bin" --data-dir "$work/bob" key rotate-prekey
[ "$(show "$bin" --data-dir "$work/bob" open "$work/message.env")" = "$text" ] \
  || fail "the old prekey no longer opens the waiting message"
echo "$text"

printf '\nDone. Everything was in %s and has been removed.\n' "$work"
