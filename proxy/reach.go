package proxy

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
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

// reach decides which URLs fragment fetches may go to. It is immutable
// after construction and safe for concurrent use.
type reach struct {
	base    *url.URL // the upstream, scheme://host[:port]
	entries []hostEntry
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
	r := &reach{base: u}
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
