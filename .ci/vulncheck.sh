#!/usr/bin/env bash
# Vulnerability check: govulncheck against a local copy of the Go
# vulnerability database, plus a minimum-version check for fasthttp.
#
# vuln.go.dev is not reachable from CI, but the Go module proxy is, and it
# serves golang.org/x/vulndb, whose data/osv directory holds the OSV reports
# the public database is generated from. .ci/vulndb converts them into the
# database layout that govulncheck reads with -db file://. The database is
# cached per vulndb version under ${XDG_CACHE_HOME:-$HOME/.cache}/fragcache-vulndb.
#
# Usage, from the repository root:
#   bash .ci/vulncheck.sh [govulncheck args]      (default args: ./...)
#
# Exit status: govulncheck's (0 clean, 3 vulnerabilities found), 1 on any
# other failure, including a fasthttp older than FASTHTTP_MIN.
#
# To pick up newer reports, bump VULNDB_VERSION (or set it in the
# environment); `go list -m golang.org/x/vulndb@latest` prints the newest.
set -euo pipefail
# The standard library is checked at the release .ci/check builds with.
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.26.10}
[[ "$GOTOOLCHAIN" == local ]] && export GOTOOLCHAIN=go1.26.10

GOVULNCHECK_VERSION=v1.9.0
VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
# fasthttp publishes its security fixes without CVE/GHSA ids, so they never
# reach the database; require a version that has them instead.
FASTHTTP_MIN=v1.72.0

die() {
	echo "vulncheck: $*" >&2
	exit 1
}

[[ -f go.mod && -f .ci/vulndb/main.go ]] || die "run from the repository root: bash .ci/vulncheck.sh"
command -v go >/dev/null || die "go not found in PATH"

work=$(mktemp -d)
tmp=""
trap 'rm -rf "$work" ${tmp:+"$tmp"}' EXIT

# --- fasthttp minimum version ------------------------------------------------

# version_lt A B: whether semantic version A sorts before release version B.
version_lt() {
	local a=${1#v} b=${2#v}
	a=${a%%+*}
	local core=${a%%-*} i
	local -a x y
	IFS=. read -r -a x <<<"$core"
	IFS=. read -r -a y <<<"$b"
	for i in 0 1 2; do
		((10#${x[i]} < 10#${y[i]})) && return 0
		((10#${x[i]} > 10#${y[i]})) && return 1
	done
	# Same MAJOR.MINOR.PATCH: a prerelease or pseudo-version of B precedes B.
	[[ $a == *-* ]]
}

if fasthttp=$(go list -m -f '{{with .Replace}}{{.Version}}{{else}}{{.Version}}{{end}}' \
	github.com/valyala/fasthttp 2>"$work/err"); then
	[[ $fasthttp =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$ ]] ||
		die "cannot check github.com/valyala/fasthttp: unexpected version '$fasthttp' (replaced by a directory?)"
	if version_lt "$fasthttp" "$FASTHTTP_MIN"; then
		die "github.com/valyala/fasthttp $fasthttp is older than $FASTHTTP_MIN, which carries security fixes that have no CVE ids (so govulncheck cannot flag them); upgrade: go get github.com/valyala/fasthttp@latest"
	fi
	echo "vulncheck: github.com/valyala/fasthttp $fasthttp >= $FASTHTTP_MIN: ok" >&2
elif grep -q "not a known dependency" "$work/err"; then
	echo "vulncheck: github.com/valyala/fasthttp is not a dependency; skipping its version check" >&2
else
	die "go list github.com/valyala/fasthttp: $(<"$work/err")"
fi

# --- local vulnerability database ------------------------------------------

cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/fragcache-vulndb
mkdir -p "$cache_root"
cache_root=$(cd "$cache_root" && pwd -P)
db=$cache_root/$VULNDB_VERSION
# A cached database is reused only if it was built by the current converter.
stamp="$(cksum <.ci/vulndb/main.go) $(cksum <.ci/vulndb/go.mod)"

if [[ ! -f $db/.stamp || $(<"$db/.stamp") != "$stamp" ]]; then
	echo "vulncheck: building vulnerability database from golang.org/x/vulndb@$VULNDB_VERSION" >&2
	# Built next to its final place so that the last step is a rename.
	tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
	# Download outside the project so its go.mod and go.sum stay untouched.
	(cd "$tmp" && GOWORK=off GOFLAGS='' go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION") >"$tmp/download.json" ||
		die "go mod download golang.org/x/vulndb@$VULNDB_VERSION failed: $(cat "$tmp/download.json")"
	GOWORK=off go -C .ci/vulndb run . -in "$tmp/download.json" -out "$tmp/db"
	printf '%s\n' "$stamp" >"$tmp/db/.stamp"
	rm -rf "$db"
	mv "$tmp/db" "$db"
fi

# --- govulncheck -------------------------------------------------------------

# Use the govulncheck in PATH if it is the pinned version. (Its -version
# output is captured first: grep -q closing the pipe early would make the
# pipeline fail under pipefail.)
govulncheck=$(command -v govulncheck || true)
if [[ -n $govulncheck ]] &&
	version=$("$govulncheck" -version 2>/dev/null) &&
	grep -qx "Scanner: govulncheck@$GOVULNCHECK_VERSION" <<<"$version"; then
	:
else
	gobin=$cache_root/govulncheck@$GOVULNCHECK_VERSION
	if [[ ! -x $gobin/govulncheck ]]; then
		echo "vulncheck: installing govulncheck@$GOVULNCHECK_VERSION" >&2
		GOBIN=$gobin GOWORK=off GOFLAGS='' go install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION"
	fi
	govulncheck=$gobin/govulncheck
fi

(($# > 0)) || set -- ./...
reports=("$db"/ID/*.json)
echo "vulncheck: govulncheck@$GOVULNCHECK_VERSION, database golang.org/x/vulndb@$VULNDB_VERSION (${#reports[@]} reports)" >&2
# Not exec: the EXIT trap still has to clean up.
status=0
"$govulncheck" -db "file://$db" "$@" || status=$?
exit "$status"
