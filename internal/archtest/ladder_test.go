package archtest

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/pgcache/pgcache"

// modules are the repository's modules, by directory (see docs/ARCHITECTURE.md).
var modules = []string{".", "extra", "integration", "cmd", "examples"}

// ladder lists, for each package of the repository, the packages of the repository it
// may import. It is docs/ARCHITECTURE.md in code: change both together.
var ladder = map[string][]string{
	// The library's module.
	"keys":               {},
	"internal/retry":     {},
	"cdc":                {"internal/retry", "internal/testhooks"},
	"internal/testhooks": {},
	"internal/store":     {"keys", "internal/testhooks"},
	"internal/near":      {},
	"writepolicy":        {},
	"writeback":          {"keys", "internal/retry", "internal/store", "internal/testhooks"},
	"readthrough":        {"keys", "internal/near", "internal/store", "internal/testhooks", "writepolicy", "writeback"},
	"invalidator":        {"keys", "cdc", "internal/retry", "internal/store", "internal/testhooks"},
	"gormcache":          {"readthrough", "writepolicy"},
	"httpcache":          {"keys", "internal/store", "internal/testhooks", "readthrough"},
	"audit":              {"keys", "internal/store", "readthrough"},
	"internal/archtest":  {},
	"httpcache/varnish":  {"internal/retry"},
	// The integration module: the harness, the test support, and the tests against real
	// servers, whose packages hold only tests (their non-test code imports nothing).
	"integration":             {},
	"integration/fixture":     {"cdc", "integration", "invalidator", "readthrough"},
	"integration/cdc":         {},
	"integration/store":       {},
	"integration/readthrough": {},
	"integration/invalidator": {},
	"integration/writeback":   {},
	"integration/gormcache":   {},
	"integration/cluster":     {},
	"integration/torture":     {},
	"integration/near":        {},
	"integration/varnish":     {},
	"integration/httpcache":   {},
	"integration/observe":     {},
	// The integrations' module: exporters at the edge, over readthrough's Stats and
	// Observer.
	"extra/internal/modelstats": {"readthrough"},
	"extra/pgcacheprom":         {"readthrough", "extra/internal/modelstats"},
	"extra/pgcacheotel":         {"readthrough", "extra/internal/modelstats"},
	// The commands' module.
	"cmd/pgcache-worker": {"audit", "keys", "cdc", "internal/store", "invalidator", "writeback", "httpcache/varnish"},
	"cmd/pgcache-bench":  {"cdc", "httpcache", "httpcache/varnish", "integration", "invalidator", "readthrough", "writepolicy", "writeback"},
}

// confined lists third-party modules that only some packages may touch: each external
// system is reached through one package.
var confined = map[string][]string{
	"github.com/jackc/pglogrepl": {"cdc", "integration"},
	"github.com/jackc/pgx/v5":    {"cdc", "integration"},
	// Packages that take a client from the user name its type; only the store calls it.
	// The test support names the clients the tests it serves hold.
	"github.com/redis/go-redis/v9": {"internal/store", "readthrough", "writeback", "invalidator", "gormcache", "httpcache", "audit", "integration", "integration/fixture"},
	"gorm.io/gorm":                 {"readthrough", "writeback", "gormcache", "integration/fixture"},
	"github.com/testcontainers/":   {"integration"},
	"github.com/maypok86/otter/":   {"internal/near"},
}

type pkg struct {
	ImportPath string
	Imports    []string
}

// list returns the packages of the module in dir.
func list(t *testing.T, dir string) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = "../../" + dir
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list in %s: %v\n%s", dir, err, ee.Stderr)
		}
		t.Fatalf("go list in %s: %v", dir, err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			return pkgs
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
}

func TestImportLadder(t *testing.T) {
	for _, dir := range modules {
		for _, p := range list(t, dir) {
			rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
			if strings.HasPrefix(rel, "examples/") {
				continue // examples are the top of the ladder and may import anything
			}
			allowed, ok := ladder[rel]
			if !ok {
				t.Errorf("package %s is not on the import ladder: add it to docs/ARCHITECTURE.md and to ladder in %s", rel, "internal/archtest")
				continue
			}
			for _, imp := range p.Imports {
				if dep, ok := strings.CutPrefix(imp, module+"/"); ok {
					if !slices.Contains(allowed, dep) {
						t.Errorf("%s imports %s, which the ladder does not allow (allowed: %v)", rel, dep, allowed)
					}
					continue
				}
				for prefix, who := range confined {
					if strings.HasPrefix(imp, prefix) && !slices.Contains(who, rel) && !strings.HasPrefix(rel, "cmd/") {
						t.Errorf("%s imports %s; only %v may", rel, imp, who)
					}
				}
			}
		}
	}
}

// heavy are modules the library does not use, only its harness and its commands: a
// user's module graph must not hold them because of pgcache.
var heavy = []string{"github.com/testcontainers/", "github.com/moby/", "github.com/docker/", "github.com/prometheus/", "go.opentelemetry.io/"}

// TestLeanModule: the library's go.mod requires none of the heavy modules. A module
// that imports pgcache's packages has in its module graph what pgcache's go.mod
// requires (the graph is pruned below that), so this is what keeps them out of it.
func TestLeanModule(t *testing.T) {
	cmd := exec.Command("go", "mod", "edit", "-json")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod edit -json: %v", err)
	}
	var mod struct {
		Require []struct{ Path string }
	}
	if err := json.Unmarshal(out, &mod); err != nil {
		t.Fatal(err)
	}
	if len(mod.Require) == 0 {
		t.Fatal("go.mod requires nothing: the check reads the wrong file")
	}
	for _, r := range mod.Require {
		for _, h := range heavy {
			if strings.HasPrefix(r.Path, h) {
				t.Errorf("the library's go.mod requires %s: a package of the library module, or one of its tests, imports it (move it to the integration or cmd module)", r.Path)
			}
		}
	}
}
