#!/usr/bin/env bash
# Capture Nova's real answers to the image-proxy requests image-gateway must reproduce.
#
# Usage: oracle-capture.sh OUT_DIR STATE_DIR
#   ORACLE_GLANCE_PORT (default 19292), ORACLE_NOVA_PORT (default 18774)
#
# Starts Glance (GLANCE_AUTH=token, so Nova's forwarded X-Auth-Token carries the project)
# and Nova from a fresh STATE_DIR, creates fixture images directly in Glance, sends every
# request to Nova with curl -sS -i -g and writes the raw answer (status line, all headers,
# exact body) to OUT_DIR/<nn>-<name>.txt. OUT_DIR/INDEX.md maps requests to files and
# OUT_DIR/fixtures.json holds Glance's JSON of each fixture. Both services are stopped on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

[ $# -eq 2 ] || { echo "usage: $0 OUT_DIR STATE_DIR" >&2; exit 2; }
mkdir -p "$1" "$2"
out="$(cd "$1" && pwd)"; state="$(cd "$2" && pwd)"
gport="${ORACLE_GLANCE_PORT:-19292}"; nport="${ORACLE_NOVA_PORT:-18774}"
G="http://127.0.0.1:$gport"; N="http://127.0.0.1:$nport"

"$here/install.sh"
rm -rf "${state:?}/glance" "${state:?}/nova" "$out"/*.txt "$out/INDEX.md" "$out/fixtures.json"
trap '"$here/nova.sh" stop "$state/nova" >/dev/null 2>&1 || true; "$here/glance.sh" stop "$state/glance" >/dev/null 2>&1 || true' EXIT
GLANCE_AUTH=token "$here/glance.sh" start "$state/glance" "$gport"
"$here/nova.sh" start "$state/nova" "$nport" "$G"

# One hex project for everything: fixtures are owned by it, Nova is called as it.
P=0f3c5a1e9b7d4c2a8e6f1b3d5c7a9e01
U=0a1b2c3d4e5f40718293a4b5c6d7e8f9
ROLES=admin,member,reader
GH=(-H 'X-Identity-Status: Confirmed' -H "X-Project-Id: $P" -H "X-User-Id: $U" -H "X-Roles: $ROLES")
NH=(-H "X-Auth-Token: gw:$P:$U:$ROLES" -H "X-User-Id: $U" -H "X-Project-Id: $P" -H "X-Roles: $ROLES")
SERVER_UUID=6b0f2a7e-3c1d-4e5f-8a9b-0c1d2e3f4a5b
MISSING_UUID=3f2e1d0c-9b8a-4765-8432-10fedcba9876

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
payload=$(mktemp); head -c 1024 /dev/zero | tr '\0' 'x' >"$payload"

# --- fixtures -------------------------------------------------------------------
declare -A FX; kinds=()
create() {  # create KIND JSON_BODY [upload]
  local kind="$1" body="$2" id
  id=$(curl -sS --fail-with-body "${GH[@]}" -H 'Content-Type: application/json' \
         -X POST "$G/v2/images" -d "$body" | json_field id)
  if [ "${3:-}" = upload ]; then
    curl -sS --fail-with-body "${GH[@]}" -H 'Content-Type: application/octet-stream' \
      -X PUT --data-binary "@$payload" "$G/v2/images/$id/file"
  fi
  FX[$kind]=$id; kinds+=("$kind")
  sleep 1   # distinct created_at seconds make Glance's created_at-desc order obvious
}
BEFORE=$(date -u -d '-2 seconds' +%Y-%m-%dT%H:%M:%SZ)
sleep 1
create alpha '{"name":"alpha","disk_format":"raw","container_format":"bare"}' upload
create queued '{"name":"queued-empty","disk_format":"raw","container_format":"bare"}'
create deactivated '{"name":"deactivated","disk_format":"raw","container_format":"bare"}' upload
curl -sS --fail-with-body "${GH[@]}" -X POST "$G/v2/images/${FX[deactivated]}/actions/deactivate"
create protected '{"name":"protected","disk_format":"raw","container_format":"bare","protected":true}' upload
create snapshot "{\"name\":\"snap-of-server\",\"disk_format\":\"raw\",\"container_format\":\"bare\",\"instance_uuid\":\"$SERVER_UUID\",\"image_type\":\"snapshot\"}" upload
create adc_true '{"name":"adc-true","disk_format":"raw","container_format":"bare","auto_disk_config":"True"}' upload
create adc_false '{"name":"adc-false","disk_format":"raw","container_format":"bare","auto_disk_config":"False"}' upload
create unicode '{"name":"Ünïcödé 画像","disk_format":"raw","container_format":"bare"}' upload
create ubuntu '{"name":"ubuntu","disk_format":"raw","container_format":"bare","os_distro":"ubuntu","min_ram":512,"min_disk":10}' upload
create bdm '{"name":"bdm","disk_format":"raw","container_format":"bare","block_device_mapping":"[{\"source_type\":\"volume\"}]"}' upload
create beta '{"name":"beta","disk_format":"raw","container_format":"bare"}' upload
create gamma '{"name":"gamma","disk_format":"raw","container_format":"bare","architecture":"x86_64","kernel_id":"nokernel","ramdisk_id":"nokernel"}' upload
create public '{"name":"public-delta","disk_format":"raw","container_format":"bare","visibility":"public"}' upload
rm -f "$payload"

{
  echo "{"
  sep=""
  for k in "${kinds[@]}"; do
    printf '%s"%s": ' "$sep" "$k"
    curl -sS --fail-with-body "${GH[@]}" "$G/v2/images/${FX[$k]}"
    sep=$',\n'
  done
  echo; echo "}"
} | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=2, ensure_ascii=False))' \
  >"$out/fixtures.json"

# --- captures -------------------------------------------------------------------
n=0
{
  echo "# Nova 34.0.0 image-proxy oracle"
  echo
  echo "Captured $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/openstack/oracle-capture.sh."
  echo "Nova: $N (uWSGI, no Keystone). Glance 33.0.0: $G, GLANCE_AUTH=token."
  echo "Every request carries: X-Auth-Token: gw:$P:$U:$ROLES, X-User-Id: $U,"
  echo "X-Project-Id: $P, X-Roles: $ROLES (plus the extra headers listed)."
  echo "Project id P=$P. Fixture ids: see fixtures.json. changes-since lower bound: $BEFORE."
  echo "Each file is the raw curl -i output: status line, all headers, blank line, exact body."
  echo
  echo "| fixture kind | image id | name |"
  echo "|---|---|---|"
  for k in "${kinds[@]}"; do
    printf '| %s | %s | %s |\n' "$k" "${FX[$k]}" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["name"])' "$out/fixtures.json" "$k")"
  done
  echo
  echo "| file | request | extra request headers / body |"
  echo "|---|---|---|"
} >"$out/INDEX.md"

# cap NAME METHOD PATH [curl args: -H HEADER / -d BODY ...]
cap() {
  local name="$1" method="$2" path="$3"; shift 3
  local file extra="" args=("$@") i
  n=$((n + 1)); file=$(printf '%03d-%s.txt' "$n" "$name")
  curl -sS -i -g -X "$method" "${NH[@]}" "$@" -o "$out/$file" "$N$path"
  for ((i = 0; i < ${#args[@]}; i += 2)); do
    case "${args[i]}" in
      -H) extra+="${extra:+; }${args[i+1]}" ;;
      -d) extra+="${extra:+; }body: ${args[i+1]}" ;;
    esac
  done
  printf '| %s | `%s %s` | %s |\n' "$file" "$method" "$path" "${extra//|/\\|}" >>"$out/INDEX.md"
  echo "$file: $(head -n1 "$out/$file" | tr -d '\r')"
}
section() { printf '| **%s** | | |\n' "$1" >>"$out/INDEX.md"; }
body_of() { sed '1,/^\r\?$/d' "$out/$1"; }
last_file() { printf '%03d-%s.txt' "$n" "$1"; }

A=${FX[alpha]}; JSON=(-H 'Accept: application/json')

section "1. lists"
cap list-basic GET /v2.1/images
cap list-detail GET /v2.1/images/detail
cap pid-list-detail GET "/v2.1/$P/images/detail"
cap v2-list-detail GET /v2/images/detail
cap v2-pid-list-basic GET "/v2/$P/images"

section "2. show one image"
for k in alpha queued deactivated protected snapshot adc_true adc_false unicode ubuntu bdm gamma public; do
  cap "show-${k//_/-}" GET "/v2.1/images/${FX[$k]}"
done
cap pid-show-alpha GET "/v2.1/$P/images/$A"
cap v2-show-alpha GET "/v2/images/$A"

section "3. detail filters"
cap f-status-ACTIVE GET '/v2.1/images/detail?status=ACTIVE'
cap f-status-SAVING GET '/v2.1/images/detail?status=SAVING'
cap f-status-active GET '/v2.1/images/detail?status=active'
cap f-name-alpha GET '/v2.1/images/detail?name=alpha'
cap f-name-foo-colon-bar GET '/v2.1/images/detail?name=foo:bar'
cap f-name-in-alpha-beta GET '/v2.1/images/detail?name=in:alpha,beta'
cap f-name-unicode GET '/v2.1/images/detail?name=%C3%9Cn%C3%AFc%C3%B6d%C3%A9%20%E7%94%BB%E5%83%8F'
cap f-server-uuid GET "/v2.1/images/detail?server=$SERVER_UUID"
cap f-server-url GET "/v2.1/images/detail?server=http://example.com/v2.1/servers/$SERVER_UUID"
cap f-type-snapshot GET '/v2.1/images/detail?type=snapshot'
cap f-minRam-512 GET '/v2.1/images/detail?minRam=512'
cap f-minDisk-10 GET '/v2.1/images/detail?minDisk=10'
cap f-changes-since GET "/v2.1/images/detail?changes-since=$BEFORE"
cap f-changes-since-garbage GET '/v2.1/images/detail?changes-since=garbage'
cap f-property-os_distro GET '/v2.1/images/detail?property-os_distro=ubuntu'
cap f-property-image_type GET '/v2.1/images/detail?property-image_type=snapshot'
cap f-unknown-foo GET '/v2.1/images/detail?foo=bar'
cap f-basic-status-ACTIVE GET '/v2.1/images?status=ACTIVE'

section "4. pagination"
cap p-limit-1 GET '/v2.1/images/detail?limit=1'
cap p-limit-2 GET '/v2.1/images/detail?limit=2'
M=$(body_of "$(last_file p-limit-2)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][1]["id"])')
cap p-limit-2-marker GET "/v2.1/images/detail?limit=2&marker=$M"
cap p-limit-0 GET '/v2.1/images/detail?limit=0'
cap p-limit-neg1 GET '/v2.1/images/detail?limit=-1'
cap p-limit-abc GET '/v2.1/images/detail?limit=abc'
cap p-limit-2-foo-name GET '/v2.1/images/detail?limit=2&foo=bar&name=alpha'
cap p-page_size-3 GET '/v2.1/images/detail?page_size=3'
cap p-marker-missing GET "/v2.1/images/detail?marker=$MISSING_UUID"
cap p-limit-1000 GET '/v2.1/images/detail?limit=1000'
cap p-limit-5000 GET '/v2.1/images/detail?limit=5000'
cap p-offset-3 GET '/v2.1/images/detail?offset=3'
cap p-basic-limit-2 GET '/v2.1/images?limit=2'
cap p-pid-basic-limit-2 GET "/v2.1/$P/images?limit=2"
cap p-pid-detail-limit-2 GET "/v2.1/$P/images/detail?limit=2"
cap p-v2-detail-limit-2 GET '/v2/images/detail?limit=2'
# next link: keys sorted, unknown params (zzz) dropped, property-* kept
cap p-next-link-params GET '/v2.1/images/detail?zzz=1&status=ACTIVE&property-image_type=snapshot&limit=1&name=snap-of-server'
TOTAL=${#kinds[@]}
cap "p-limit-$TOTAL-equals-total" GET "/v2.1/images/detail?limit=$TOTAL"
LAST=$(body_of "$(last_file "p-limit-$TOTAL-equals-total")" | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][-1]["id"])')
cap p-follow-last-next GET "/v2.1/images/detail?limit=$TOTAL&marker=$LAST"

section "5. not found"
cap show-missing GET "/v2.1/images/$MISSING_UUID"
cap show-missing-accept-json GET "/v2.1/images/$MISSING_UUID" "${JSON[@]}"

section "6. microversions"
for target in detail show; do
  if [ $target = detail ]; then path=/v2.1/images/detail; else path="/v2.1/images/$A"; fi
  cap "mv-$target-2.35" GET "$path" -H 'OpenStack-API-Version: compute 2.35'
  cap "mv-$target-2.36" GET "$path" -H 'OpenStack-API-Version: compute 2.36'
  cap "mv-$target-latest" GET "$path" -H 'OpenStack-API-Version: compute latest'
  cap "mv-$target-2.1" GET "$path" -H 'OpenStack-API-Version: compute 2.1'
  cap "mv-$target-abc" GET "$path" -H 'OpenStack-API-Version: compute abc'
  cap "mv-$target-3.0" GET "$path" -H 'OpenStack-API-Version: compute 3.0'
  cap "mv-$target-2.999" GET "$path" -H 'OpenStack-API-Version: compute 2.999'
  cap "mv-$target-legacy-2.36" GET "$path" -H 'X-OpenStack-Nova-API-Version: 2.36'
  cap "mv-$target-new-2.35-legacy-2.36" GET "$path" -H 'OpenStack-API-Version: compute 2.35' -H 'X-OpenStack-Nova-API-Version: 2.36'
  cap "mv-$target-new-2.36-legacy-2.35" GET "$path" -H 'OpenStack-API-Version: compute 2.36' -H 'X-OpenStack-Nova-API-Version: 2.35'
  cap "mv-$target-image-2.5" GET "$path" -H 'OpenStack-API-Version: image 2.5'
done
cap mv-detail-multi-entry GET /v2.1/images/detail -H 'OpenStack-API-Version: compute 2.36, image 2.5, compute 2.30'
cap mv-detail-v2-2.36 GET /v2/images/detail -H 'OpenStack-API-Version: compute 2.36'
cap mv-metadata-2.1 GET "/v2.1/images/$A/metadata"
cap mv-metadata-2.38 GET "/v2.1/images/${FX[gamma]}/metadata" -H 'OpenStack-API-Version: compute 2.38'
cap mv-metadata-2.39 GET "/v2.1/images/${FX[gamma]}/metadata" -H 'OpenStack-API-Version: compute 2.39'

section "7. route misses"
for acc in none json; do
  if [ $acc = json ]; then ex=("${JSON[@]}"); else ex=(); fi
  cap "miss-post-images-$acc" POST /v2.1/images "${ex[@]}" -H 'Content-Type: application/json' -d '{}'
  cap "miss-put-image-$acc" PUT "/v2.1/images/$A" "${ex[@]}" -H 'Content-Type: application/json' -d '{}'
  cap "miss-delete-blank-$acc" DELETE /v2.1/images/ "${ex[@]}"
  cap "miss-get-nothing-$acc" GET "/v2.1/images/$A/nothing" "${ex[@]}"
  cap "miss-not-hex-pid-$acc" GET /v2.1/not_hex_pid/images "${ex[@]}"
done
cap miss-delete-detail DELETE /v2.1/images/detail
cap pid-mismatch GET /v2.1/00000000000000000000000000000abc/images

section "8. version documents"
cap ver-root GET /
cap ver-v2.1 GET /v2.1
cap ver-v2.1-slash GET /v2.1/
cap ver-v2 GET /v2
cap ver-v2-slash GET /v2/
cap ver-unknown GET /v3

section "9. delete"
cap delete-protected DELETE "/v2.1/images/${FX[protected]}"
cap delete-missing DELETE "/v2.1/images/$MISSING_UUID"
cap delete-not-uuid DELETE /v2.1/images/tempest-invalid-1

section "10. other project (member,reader of a project that owns none of the fixtures)"
NH=(-H "X-Auth-Token: gw:aaaabbbbccccddddeeeeffff00001111:$U:member,reader" -H "X-User-Id: $U" \
    -H 'X-Project-Id: aaaabbbbccccddddeeeeffff00001111' -H 'X-Roles: member,reader')
cap other-list-basic GET /v2.1/images
cap other-show-alpha GET "/v2.1/images/$A"
cap other-show-public GET "/v2.1/images/${FX[public]}"
cap other-delete-public DELETE "/v2.1/images/${FX[public]}"
cap other-metadata-alpha GET "/v2.1/images/$A/metadata"

section "11. no identity headers at all"
NH=()
cap noheaders-list GET /v2.1/images
cap noheaders-token-only GET /v2.1/images -H "X-Auth-Token: gw:$P:$U:$ROLES"

section "12. last: a successful delete"
NH=(-H "X-Auth-Token: gw:$P:$U:$ROLES" -H "X-User-Id: $U" -H "X-Project-Id: $P" -H "X-Roles: $ROLES")
cap delete-queued DELETE "/v2.1/images/${FX[queued]}"
cap show-after-delete GET "/v2.1/images/${FX[queued]}"

echo "captured $n answers into $out"
