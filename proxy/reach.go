package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// errNotAllowed is the failure of an include whose URL points anywhere but
// the upstream and the allowed hosts.
var errNotAllowed = errors.New("fragment URL not allowed")

// hostEntry is one host fragcache may contact.
type hostEntry struct {
	name     string // as configured, for metrics labels
	host     string // lower case, IPv6 without brackets
	port     string // "" = any port
	upstream bool
}

// reach decides which URLs fragment fetches may go to, and which
// addresses they may dial. It is immutable after construction and safe for
// concurrent use.
type reach struct {
	base         *url.URL // the upstream, scheme://host[:port]
	upstreamAddr string   // host:port of the upstream, as targets spell it
	entries      []hostEntry
	// lookup resolves an --allow-host name at dial time; tests replace it.
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

func newReach(upstream string, allow []string) (*reach, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Hostname() == "" {
		return nil, errors.New("upstream must be http(s)://host[:port]")
	}
	u.Path, u.RawPath, u.RawQuery, u.Fragment = "", "", "", ""
	r := &reach{
		base:         u,
		upstreamAddr: net.JoinHostPort(strings.ToLower(u.Hostname()), portOf(u)),
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
	}
	r.entries = append(r.entries, hostEntry{
		name:     upstreamLabel(u),
		host:     strings.ToLower(u.Hostname()),
		port:     portOf(u),
		upstream: true,
	})
	for _, a := range allow {
		e := hostEntry{name: a}
		if h, p, err := net.SplitHostPort(a); err == nil {
			e.host, e.port = strings.ToLower(h), p
		} else {
			e.host = strings.ToLower(strings.Trim(a, "[]"))
		}
		r.entries = append(r.entries, e)
	}
	return r, nil
}

func upstreamLabel(u *url.URL) string { return u.Host }

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// target is a fragment URL that passed the checks, in the parts the fetch
// is built from. Every field is an owned string.
type target struct {
	scheme   string // http or https
	addr     string // host:port to dial
	hostHdr  string // the Host header
	uri      string // path and query, as sent
	url      string // the absolute URL, the cache key's base
	label    string // metrics label of the host entry
	upstream bool   // the page's own upstream: credentials and ESI allowed
}

// resolve turns an include's src, relative to the page's request URI
// (path and query on the upstream), into a target, or errNotAllowed. The
// URL is parsed once; the request is built from this parse.
func (r *reach) resolve(pageURI, src string) (target, error) {
	if t, ok := r.resolveFast(src); ok {
		return t, nil
	}
	return r.resolveURL(pageURI, src)
}

// resolveFast is resolve for the commonest src, an absolute path on the
// upstream in plain characters with an optional query, without parsing a
// URL: a page whose srcs are not cached pays it per include. ok is false
// for every other src, which resolveURL then decides; for one it takes it
// returns what resolveURL would (FuzzResolveFast holds it to that).
func (r *reach) resolveFast(src string) (target, bool) {
	if len(src) == 0 || len(src) > 8192 || src[0] != '/' {
		return target{}, false
	}
	path, query, hasQuery := strings.Cut(src, "?")
	if hasQuery && query == "" {
		return target{}, false // "/a?" is sent as "/a"
	}
	prev := byte(0)
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '~':
		case c == '/':
			if prev == '/' {
				return target{}, false // "//host" or an empty segment
			}
		case c == '.':
			if prev == '/' {
				return target{}, false // a segment that starts with a dot may be "." or ".."
			}
		default:
			return target{}, false // escaped, reserved or not ASCII: the parser decides
		}
		prev = path[i]
	}
	for i := 0; i < len(query); i++ {
		if c := query[i]; c <= ' ' || c >= 0x7f || c == '#' || c == '\\' {
			return target{}, false
		}
	}
	uri := strings.Clone(src)
	return target{
		scheme:   r.base.Scheme,
		addr:     r.upstreamAddr,
		hostHdr:  r.base.Host,
		uri:      uri,
		url:      r.base.Scheme + "://" + r.upstreamAddr + uri,
		label:    r.entries[0].name,
		upstream: true,
	}, true
}

// resolveURL is resolve through a parse of src as a URL reference.
func (r *reach) resolveURL(pageURI, src string) (target, error) {
	if src == "" || len(src) > 8192 || strings.ContainsAny(src, "\x00\r\n\t \\") {
		return target{}, errNotAllowed
	}
	ref, err := url.Parse(src)
	if err != nil || ref.User != nil || ref.Opaque != "" {
		return target{}, errNotAllowed
	}
	var u *url.URL
	if ref.Scheme == "" && ref.Host == "" {
		page, err := url.ParseRequestURI(pageURI)
		if err != nil {
			page = &url.URL{Path: "/"}
		}
		page.Scheme, page.Host = r.base.Scheme, r.base.Host
		u = page.ResolveReference(ref)
	} else {
		if ref.Scheme == "" { // scheme-relative //host/path
			ref.Scheme = r.base.Scheme
		}
		u = ref
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return target{}, errNotAllowed
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return target{}, errNotAllowed
	}
	port := portOf(u)
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return target{}, errNotAllowed
		}
	}
	for i := range r.entries {
		e := &r.entries[i]
		if e.host != host || (e.port != "" && e.port != port) {
			continue
		}
		if e.upstream && u.Scheme != r.base.Scheme {
			continue
		}
		u.Fragment, u.RawFragment = "", ""
		uri := u.EscapedPath()
		if uri == "" {
			uri = "/"
		}
		if u.RawQuery != "" {
			uri += "?" + u.RawQuery
		}
		hostHdr := u.Host
		if e.upstream {
			hostHdr = r.base.Host
		}
		return target{
			scheme:   u.Scheme,
			addr:     net.JoinHostPort(host, port),
			hostHdr:  hostHdr,
			uri:      uri,
			url:      u.Scheme + "://" + net.JoinHostPort(host, port) + uri,
			label:    e.name,
			upstream: e.upstream,
		}, nil
	}
	return target{}, errNotAllowed
}

// errDialDenied fails the dial of an --allow-host name whose addresses are
// all ones fragcache never dials (DESIGN rule 19); the fetch counts
// result=denied.
var errDialDenied = errors.New("fragment host resolves only to addresses fragcache never dials")

// dial connects a fragment fetch to addr (host:port of a target). The
// upstream and hosts written as IP literals are dialled as written. An
// --allow-host name is resolved here, at every dial, and only the
// addresses neverDialled lets through are dialled, IPv4 first; the name is
// never resolved a second time on the way, so a DNS answer that changes
// between the check and the connection (DNS rebinding) cannot slip past.
func (r *reach) dial(addr string, timeout time.Duration) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || addr == r.upstreamAddr {
		return fasthttp.DialTimeout(addr, timeout)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return fasthttp.DialTimeout(addr, timeout)
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial %s: bad port", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ips, err := r.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	var v4, v6 []netip.Addr
	for _, ip := range ips {
		switch {
		case neverDialled(ip):
		case ip.Unmap().Is4():
			v4 = append(v4, ip.Unmap())
		default:
			v6 = append(v6, ip)
		}
	}
	if len(v4)+len(v6) == 0 {
		return nil, fmt.Errorf("%w: %s is %v", errDialDenied, host, ips)
	}
	var d net.Dialer
	for _, ip := range append(v4, v6...) {
		c, derr := d.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, uint16(pn)).String())
		if derr == nil {
			return c, nil
		}
		err = derr
	}
	return nil, err
}

// Metadata services outside the ranges neverDialled refuses anyway.
var (
	awsMetadataV6     = netip.MustParseAddr("fd00:ec2::254")
	alibabaMetadataV4 = netip.MustParseAddr("100.100.100.200")
)

// neverDialled reports whether an address an --allow-host name resolved
// to must not be dialled (DESIGN rule 19): loopback, link-local
// (169.254.0.0/16, where cloud metadata lives, and fe80::/10),
// unspecified, the rest of 0.0.0.0/8 (Linux connects 0.x.y.z to the local
// host), each in its IPv4-mapped form too, and the two well-known metadata
// addresses that sit in ranges legacy apps use (AWS's fd00:ec2::254 in
// fc00::/7, Alibaba's 100.100.100.200 in 100.64.0.0/10). Private ranges
// are dialled: legacy apps live there.
func neverDialled(ip netip.Addr) bool {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback(), ip.IsLinkLocalUnicast(), ip.IsUnspecified(),
		ip.Is4() && ip.As4()[0] == 0,
		ip == awsMetadataV6, ip == alibabaMetadataV4:
		return true
	}
	return false
}
