#!/bin/sh
# The SPIRE zone's command: bridge the SPIRE server into the zone, start
# spire-agent (which attests this zone with the `zone` NodeAttestor), then
# run the workload: fetch an X.509-SVID from the Workload API and print its
# SPIFFE ID. Lines `ZONE-TIMING <event> uptime_ms=<ms>` mark the steps (for
# scripts/bench-spire). Usage: start.sh [AGENT_CONF [CMD ARG...]]
# AGENT_CONF `default` is /opt/spire/agent.conf. With CMD, the workload goes
# on as CMD (exec'd once the SVID is in /tmp/svid: svid.0.pem, svid.0.key,
# bundle.0.pem) instead of sleeping.
conf=${1:-default}
[ "$conf" = default ] && conf=/opt/spire/agent.conf
[ $# -gt 0 ] && shift
mark() {
  u=$(cut -d' ' -f1 /proc/uptime); f=${u#*.}; f=${f#0}
  echo "ZONE-TIMING $1 uptime_ms=$(( ${u%.*} * 1000 + f * 10 ))"
}
mark start
mkdir -p /run/spire/data /tmp/svid
/bin/zone-guest forward 127.0.0.1:8081 8081 &
/opt/spire/bin/spire-agent run -config "$conf" > /tmp/agent.log 2>&1 &
agent=$!
for _ in $(seq 600); do
  /opt/spire/bin/spire-agent healthcheck -socketPath /run/spire/agent.sock > /dev/null 2>&1 && break
  kill -0 $agent 2> /dev/null || break
  sleep 0.5
done
if ! kill -0 $agent 2> /dev/null; then
  echo "SPIRE-AGENT-FAILED"
  grep -i -E 'level=(error|warn)|denied|rejected' /tmp/agent.log | head -n 20
  exit 3
fi
mark attested
echo "SPIRE-AGENT-READY"
# The workload: its registration entry may need a few seconds to reach the agent.
for _ in $(seq 120); do
  if /opt/spire/bin/spire-agent api fetch x509 -socketPath /run/spire/agent.sock -write /tmp/svid > /tmp/fetch.out 2>&1; then
    mark svid
    grep -i 'spiffe id' /tmp/fetch.out
    echo "WORKLOAD-SVID-OK"
    [ $# -gt 0 ] && exec "$@"
    break
  fi
  sleep 1
done
exec sleep 1000000
