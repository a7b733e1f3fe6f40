package proxy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/valyala/fasthttp"

	"fragcache/l2"
)

// The tags of a stored fragment (DESIGN "Invalidation"): automatic ones,
// derived from where it was fetched, and the ones its upstream's answer
// names. A fragment is known by their hashes (l2.Tag) only, here as in
// Redis; a purge names the tags' text.
const (
	tagURL  = "url:"  // + the absolute URL without its query: every query variant
	tagPath = "path:" // + scheme://host:port and a leading path prefix
	tagRule = "rule:" // + the name of the fragment rule it matched
	tagAll  = "all"   // every fragment
	// maxPathTags is the most leading path prefixes tagged, and the most
	// segments a purged prefix may have.
	maxPathTags = 4
	// maxAutoTags bounds the automatic tags of one fragment: url, the
	// path prefixes, rule, all.
	maxAutoTags = 3 + maxPathTags
)

// urlBase splits a target's absolute URL into scheme://host:port and its
// path without the query.
func urlBase(t *target) (base, path string) {
	base = t.url[:len(t.url)-len(t.uri)]
	path = t.uri
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	return base, path
}

// autoTagIDs appends the automatic tags of a fragment fetched from t under
// rule r (nil: none): its url, each leading path prefix of up to
// maxPathTags segments (for /a/b/c: /a, /a/b, /a/b/c), the rule's name when
// it has one, and all.
func autoTagIDs(dst []l2.Tag, t *target, r *rule) []l2.Tag {
	base, path := urlBase(t)
	dst = append(dst, l2.TagOf(tagURL+base+path))
	n := 0
	for i := 1; i <= len(path) && n < maxPathTags; i++ {
		if (i == len(path) || path[i] == '/') && path[i-1] != '/' {
			dst = append(dst, l2.TagOf(tagPath+base+path[:i]))
			n++
		}
	}
	if r != nil && r.Name != "" {
		dst = append(dst, l2.TagOf(tagRule+r.Name))
	}
	return append(dst, l2.TagOf(tagAll))
}

// prefixTag returns the path: tag of a purged prefix: 1 to maxPathTags
// whole segments (a trailing / is dropped), no query, no empty segment.
func prefixTag(r *reach, pre string) (string, error) {
	if strings.ContainsAny(pre, "?#") {
		return "", errors.New("a prefix has no query")
	}
	t, err := r.resolve("/", pre)
	if err != nil {
		return "", errors.New("not a path of the upstream or an allowed host")
	}
	base, path := urlBase(&t)
	if len(path) > 1 {
		path = strings.TrimSuffix(path, "/")
	}
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	switch {
	case path == "/" || path == "":
		return "", errors.New("no segment: purge the tag all instead")
	case len(segs) > maxPathTags:
		return "", fmt.Errorf("%d segments, at most %d", len(segs), maxPathTags)
	}
	for _, s := range segs {
		if s == "" {
			return "", errors.New("an empty segment")
		}
	}
	return tagPath + base + path, nil
}

// upstreamTags reads the purge tags a fragment's answer names, in header
// order: Surrogate-Key and xkey (space-separated), then Cache-Tag
// (comma-separated), each header's lines in order. Repeats are dropped; a
// tag longer than maxRecordTag bytes is dropped, and so is every tag after
// the maxRecordTags-th: those are counted in dropped (DESIGN rule 28).
func upstreamTags(h *fasthttp.ResponseHeader) (tags []string, dropped int) {
	add := func(tag string) {
		switch {
		case tag == "":
		case len(tag) > maxRecordTag || len(tags) == maxRecordTags && !hasTag(tags, tag):
			dropped++
		case !hasTag(tags, tag):
			tags = append(tags, tag)
		}
	}
	for _, name := range [...]string{"Surrogate-Key", "Xkey"} {
		for _, line := range h.PeekAll(name) {
			for _, tag := range strings.Fields(string(line)) {
				add(tag)
			}
		}
	}
	for _, line := range h.PeekAll("Cache-Tag") {
		for tag := range strings.SplitSeq(string(line), ",") {
			add(strings.TrimSpace(tag))
		}
	}
	return tags, dropped
}

func hasTag(tags []string, tag string) bool {
	for _, t := range tags {
		if t == tag {
			return true
		}
	}
	return false
}

// tagIDs returns the hashes of the tags auto (automatic, already hashed)
// and named (an upstream's), without repeats.
func tagIDs(auto []l2.Tag, named []string) []l2.Tag {
	ids := auto
	for _, tag := range named {
		id := l2.TagOf(tag)
		if !hasID(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

func hasID(ids []l2.Tag, id l2.Tag) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
