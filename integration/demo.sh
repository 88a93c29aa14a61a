#!/usr/bin/env bash
# make demo: the whole of lifeline on this machine's loopback, as any user.
#
#   operator (you)            bastion                     "site"
#   ssh -F cfg pi  --SSH-->  lifeline-bastion  <--SSH--  lifeline-agent --> throwaway sshd (the Pi's own)
#                              |  SMS
#                              v
#                            fake-twilio (prints each text it would have sent)
#
# Everything lives in one throwaway folder and is removed on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
bin=$top/bin

say() { printf '\033[1m%s\033[0m\n' "$*"; }

sshd_bin=$(command -v sshd || true)
[ -z "$sshd_bin" ] && [ -x /usr/sbin/sshd ] && sshd_bin=/usr/sbin/sshd
if [ -z "$sshd_bin" ] || ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing OpenSSH (the demo runs a throwaway sshd as the Pi's own server)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null
    sshd_bin=$(command -v sshd || echo /usr/sbin/sshd)
  else
    echo "make demo needs OpenSSH's sshd and ssh. Install them with:"
    echo "  sudo apt-get install -y openssh-server openssh-client"
    exit 1
  fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lifeline-demo.XXXXXX")
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
  echo
  say "demo stopped; everything it made is gone ($tmp)"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( (RANDOM % 20000) + 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port found" >&2; return 1
}
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1; the logs say:" >&2
  tail -n 5 "$tmp"/*.log "$tmp"/*/*.log >&2 2>/dev/null || true
  return 1
}

bastion_port=$(free_port); pi_port=$(free_port); twilio_port=$(free_port); speedtest_port=$(free_port)
mkdir -p "$tmp/bastion" "$tmp/agent" "$tmp/pi" "$tmp/operator"

say "1. keys and configuration in $tmp"
go build -o "$tmp/fake-twilio" ./integration/cmd/fake-twilio
go build -o "$tmp/fake-speedtest" ./integration/cmd/fake-speedtest
ssh-keygen -q -t ed25519 -N '' -C "you@demo" -f "$tmp/operator/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -C "pi host key" -f "$tmp/pi/ssh_host_ed25519_key"

export LIFELINE_HOST_KEY=$tmp/bastion/ssh_host_ed25519_key LIFELINE_STATE_DIR=$tmp/bastion/state
export LIFELINE_AGENTS=$tmp/bastion/agents LIFELINE_OPERATORS=$tmp/bastion/operators
export LIFELINE_LISTEN=127.0.0.1:$bastion_port LIFELINE_NAME=demo-bastion LIFELINE_REPORT_EVERY=5s # the demo checks every 10s
agent_env=("LIFELINE_BASTION=127.0.0.1:$bastion_port" "LIFELINE_KEY=$tmp/agent/agent_ed25519_key"
  "LIFELINE_KNOWN_HOSTS=$tmp/agent/known_hosts" "LIFELINE_FORWARDS=pi:22=127.0.0.1:$pi_port"
  "LIFELINE_STATE_DIR=$tmp/agent/state" "LIFELINE_CHECK_EVERY=10s" "LIFELINE_CHECK_DURATION=2s"
  "LIFELINE_SPEEDTEST_URL=http://127.0.0.1:$speedtest_port" "LIFELINE_EXPECT_ISP=demo carrier" "LIFELINE_CHECK_BUDGET=10MB"
  "LIFELINE_CHECK_MONTHLY_BUDGET=0") # the demo checks every 10s

# Pair them the way the README says: the agent's pubkey line into the
# bastion's agents file, the bastion's host key into the agent's known_hosts.
env "${agent_env[@]}" "$bin/lifeline-agent" pubkey > "$LIFELINE_AGENTS" 2>/dev/null
cp "$tmp/operator/id_ed25519.pub" "$LIFELINE_OPERATORS"
"$bin/lifeline-bastion" hostkey 2>/dev/null | grep -v '^#' | sed "s/^\[demo-bastion\]/[127.0.0.1]/" > "$tmp/agent/known_hosts"
echo "   agents file:    $(cut -c1-80 "$LIFELINE_AGENTS")…"
echo "   operators file: $(cut -c1-80 "$LIFELINE_OPERATORS")…"

say "2. a stand-in for Twilio on 127.0.0.1:$twilio_port (prints every text)"
export TWILIO_ACCOUNT_SID=AC00000000000000000000000000000001 TWILIO_AUTH_TOKEN=demotoken0000000000000000000000
"$tmp/fake-twilio" -addr "127.0.0.1:$twilio_port" > "$tmp/sms.log" 2>&1 &
pids+=($!)
wait_port "$twilio_port"

"$tmp/fake-speedtest" -addr "127.0.0.1:$speedtest_port" -isp "Demo Carrier Mobile" -rate 40Mbps > "$tmp/speedtest.log" 2>&1 &
pids+=($!)
wait_port "$speedtest_port"

say "3. lifeline-bastion on 127.0.0.1:$bastion_port"
LIFELINE_SMS_FROM=+15005550006 LIFELINE_SMS_TO=+15551234567 LIFELINE_TWILIO_URL=http://127.0.0.1:$twilio_port \
  "$bin/lifeline-bastion" > "$tmp/bastion.log" 2>&1 &
pids+=($!)
wait_port "$bastion_port"

say "4. the Pi's own sshd on 127.0.0.1:$pi_port (a throwaway OpenSSH server)"
cat > "$tmp/pi/sshd_config" <<CFG
ListenAddress 127.0.0.1:$pi_port
HostKey $tmp/pi/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile $tmp/operator/id_ed25519.pub
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
CFG
"$sshd_bin" -D -e -f "$tmp/pi/sshd_config" > "$tmp/pi/sshd.log" 2>&1 &
pids+=($!)
wait_port "$pi_port"

say "5. lifeline-agent: reverse tunnel registering pi:22"
env "${agent_env[@]}" "$bin/lifeline-agent" > "$tmp/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q 'registered' "$tmp/agent.log" && break; sleep 0.1; done
grep -q 'registered' "$tmp/agent.log" || { echo "the agent did not register; its log:"; cat "$tmp/agent.log"; exit 1; }

cat > "$tmp/operator/ssh_config" <<CFG
Host bastion
  HostName 127.0.0.1
  Port $bastion_port
Host pi
  User $(id -un)
  ProxyJump bastion
Host *
  IdentityFile $tmp/operator/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $tmp/operator/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
CFG
{ sed "s/^\[demo-bastion\]/[127.0.0.1]/" "$tmp/agent/known_hosts"
  echo "pi $(cut -d' ' -f1-2 "$tmp/pi/ssh_host_ed25519_key.pub")"; } > "$tmp/operator/known_hosts"

say "6. the jump, once, with host keys checked at both hops:"
echo "   \$ ssh -F $tmp/operator/ssh_config pi 'echo hello from the pi'"
ssh -F "$tmp/operator/ssh_config" -o BatchMode=yes pi 'echo "   hello from the pi ($(whoami)@$(hostname))"'
for _ in $(seq 1 50); do grep -q 'SMS' "$tmp/sms.log" && break; sleep 0.1; done
say "7. the text the owner got:"
grep 'SMS' "$tmp/sms.log" | sed 's/^/   /' || echo "   (no SMS yet; see $tmp/bastion.log)"
say "8. a link check of the backup uplink (a stand-in speedtest server, 40 Mbit/s):"
echo "   \$ lifeline-agent check"
env "${agent_env[@]}" "$bin/lifeline-agent" check 2>&1 | sed 's/^/   /' || true
for _ in $(seq 1 150); do grep -q 'link report' "$tmp/bastion.log" && break; sleep 0.1; done
say "9. what the bastion sees (the agent reports its own checks every 10 s here; hourly by default):"
ssh -F "$tmp/operator/ssh_config" -o BatchMode=yes bastion status | sed 's/^/   /'

echo
say "Try it yourself (in another terminal):"
echo "   ssh -F $tmp/operator/ssh_config pi"
echo "   ssh -F $tmp/operator/ssh_config bastion status --json"
echo "   tail -f $tmp/sms.log $tmp/bastion/state/audit.jsonl"
echo "Press Ctrl-C to stop and clean up."
tail -n 0 -f "$tmp/sms.log" &
pids+=($!)
wait "${pids[0]}"
