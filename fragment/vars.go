package fragment

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
	for len(h) > 0 {
		var part string
		if i := indexByteString(h, ';'); i >= 0 {
			part, h = h[:i], h[i+1:]
		} else {
			part, h = h, ""
		}
		part = trimSpace(part)
		eq := indexByteString(part, '=')
		if eq < 0 {
			continue
		}
		if trimSpace(part[:eq]) != name {
			continue
		}
		v := trimSpace(part[eq+1:])
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}

func indexByteString(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}
