package writepolicy_test

import (
	"errors"
	"testing"

	"github.com/pgcache/pgcache/writepolicy"
)

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]writepolicy.Policy{
		"invalidate": writepolicy.Invalidate, "write-through": writepolicy.WriteThrough, "WriteBack": writepolicy.WriteBack,
		"write_back": writepolicy.WriteBack, "writethrough": writepolicy.WriteThrough,
	} {
		if got, err := writepolicy.ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %v, %v; want %v", in, got, err, want)
		}
		if got, _ := writepolicy.ParsePolicy(want.String()); got != want {
			t.Errorf("ParsePolicy(%v.String()) = %v", want, got)
		}
	}
	if _, err := writepolicy.ParsePolicy("write-around"); !errors.Is(err, writepolicy.ErrConfig) {
		t.Errorf("ParsePolicy(write-around) error %v, want ErrConfig", err)
	}
	if _, err := writepolicy.ParsePolicy(writepolicy.Policy(9).String()); err == nil || writepolicy.Policy(9).String() != "Policy(9)" {
		t.Error("Policy(9) is valid or prints oddly")
	}
}
