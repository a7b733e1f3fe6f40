package fragment

import "strings"

// RequestVars is a ready Vars implementation filled from strings. The zero
// value has every variable empty and expands no cookie. It is safe for
// concurrent use as long as it is not modified.
type RequestVars struct {
	HostName       string // $(HTTP_HOST)
	RefererHeader  string // $(HTTP_REFERER)
	Query          string // the raw query string, without '?'
	AcceptLang     string // the Accept-Language header
	UserAgentValue string // the User-Agent header
	CookieHeader   string // the Cookie header as sent
	// AllowCookies lists the cookie names $(HTTP_COOKIE{name}) may expand;
	// other names expand as unset. Nil allows none.
	AllowCookies []string
}

// Host implements Vars.
func (r *RequestVars) Host() string { return r.HostName }

// Referer implements Vars.
func (r *RequestVars) Referer() string { return r.RefererHeader }

// RawQuery implements Vars.
func (r *RequestVars) RawQuery() string { return r.Query }

// AcceptLanguage implements Vars.
func (r *RequestVars) AcceptLanguage() string { return r.AcceptLang }

// UserAgent implements Vars.
func (r *RequestVars) UserAgent() string { return r.UserAgentValue }

// Cookie implements Vars: it returns the first cookie called name in
// CookieHeader, if name is listed in AllowCookies.
func (r *RequestVars) Cookie(name string) (string, bool) {
	allowed := false
	for _, a := range r.AllowCookies {
		if a == name {
			allowed = true
			break
		}
	}
	if !allowed {
		return "", false
	}
	h := r.CookieHeader
	for h != "" {
		var part string
		part, h, _ = strings.Cut(h, ";")
		k, v, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(k) != name {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}
