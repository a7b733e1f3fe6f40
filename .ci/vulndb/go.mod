module fragcache/ci/vulndb

go 1.22
