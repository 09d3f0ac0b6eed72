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

// ladder lists, for each package of the module, the packages of the module it may
// import. It is docs/ARCHITECTURE.md in code: change both together.
var ladder = map[string][]string{
	"keys":               {},
	"internal/retry":     {},
	"cdc":                {"internal/retry"},
	"internal/store":     {"keys"},
	"writepolicy":        {},
	"writeback":          {"keys", "internal/retry", "internal/store"},
	"readthrough":        {"keys", "internal/store", "writepolicy", "writeback"},
	"invalidator":        {"keys", "cdc", "internal/retry", "internal/store"},
	"cmd/pgcache-worker": {"keys", "cdc", "internal/store", "invalidator", "writeback"},
	"integration":        {},
	"internal/archtest":  {},
	// Test-only packages and tools: their non-test code imports nothing of the module
	// beyond what is listed.
	"internal/clustertest": {},
	"internal/torture":     {},
	"internal/widgettest":  {"integration", "readthrough"},
	"cmd/pgcache-bench":    {"cdc", "integration", "invalidator", "readthrough", "writepolicy", "writeback"},
}

// confined lists third-party modules that only some packages may touch: each external
// system is reached through one package.
var confined = map[string][]string{
	"github.com/jackc/pglogrepl": {"cdc", "integration"},
	"github.com/jackc/pgx/v5":    {"cdc", "integration"},
	// Packages that take a client from the user name its type; only the store calls it.
	// internal/widgettest is a test fixture, imported only by tests: it names the clients
	// the tests it serves hold.
	"github.com/redis/go-redis/v9": {"internal/store", "readthrough", "writeback", "invalidator", "integration", "internal/widgettest"},
	"gorm.io/gorm":                 {"readthrough", "writeback", "internal/widgettest"},
	"github.com/testcontainers/":   {"integration"},
}

type pkg struct {
	ImportPath string
	Imports    []string
}

func TestImportLadder(t *testing.T) {
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
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
