package policy

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mayflyhq/mayfly/broker/authn"
)

// Conditions (`when:`) are CEL expressions compiled once at load against
// two typed variables, so a misspelt field is a load error rather than a
// denial at 3 a.m.:
//
//	principal.id            string     "user:alice", "spiffe://td/agents/a1"
//	principal.kind          string     "human" or "workload"
//	principal.groups        list(string) policy groups (names from groups:) the caller belongs to
//	principal.idp_groups    list(string) groups asserted by the IdP ("oidc-group:corp/sre")
//	principal.trust_domain  string     a workload's trust domain ("" for humans)
//	request.entitlement     string
//	request.reason          string
//	request.ticket          string
//	request.duration        duration   what was asked for: the grant's length (requests) or the TTL (issuance)
//	request.time            timestamp  when the decision is made (UTC)

// maxConditionLen bounds a condition's source; conditions are short rules.
const maxConditionLen = 4096

// conditionCostLimit bounds one evaluation; a condition that needs more is
// an evaluation error, which denies.
const conditionCostLimit = 100_000

// principalVar is what a condition sees as `principal`.
type principalVar struct {
	ID          string   `cel:"id"`
	Kind        string   `cel:"kind"`
	Groups      []string `cel:"groups"`
	IdPGroups   []string `cel:"idp_groups"`
	TrustDomain string   `cel:"trust_domain"`
}

// requestVar is what a condition sees as `request`.
type requestVar struct {
	Entitlement string        `cel:"entitlement"`
	Reason      string        `cel:"reason"`
	Ticket      string        `cel:"ticket"`
	Duration    time.Duration `cel:"duration"`
	Time        time.Time     `cel:"time"`
}

var conditionEnv = sync.OnceValues(func() (*cel.Env, error) {
	pt, rt := reflect.TypeOf(principalVar{}), reflect.TypeOf(requestVar{})
	return cel.NewEnv(
		ext.NativeTypes(pt, rt, ext.ParseStructTags(true)),
		ext.Strings(),
		cel.Variable("principal", cel.ObjectType(celTypeName(pt))),
		cel.Variable("request", cel.ObjectType(celTypeName(rt))),
		cel.ParserExpressionSizeLimit(maxConditionLen),
		cel.ParserRecursionLimit(64),
	)
})

// celTypeName is the name ext.NativeTypes gives a Go struct type.
func celTypeName(t reflect.Type) string {
	pkg := t.PkgPath()
	if i := strings.LastIndexByte(pkg, '/'); i >= 0 {
		pkg = pkg[i+1:]
	}
	return pkg + "." + t.Name()
}

// condition is a compiled `when:` expression.
type condition struct {
	src string
	prg cel.Program
}

// compileCondition compiles src; the error names what is wrong and where
// in the expression, without the package prefix.
func compileCondition(src string) (*condition, error) {
	env, err := conditionEnv()
	if err != nil {
		return nil, fmt.Errorf("condition environment: %v", err)
	}
	if len(src) > maxConditionLen {
		return nil, fmt.Errorf("longer than %d bytes", maxConditionLen)
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		var msgs []string
		multiline := strings.Contains(strings.TrimRight(src, "\n"), "\n")
		for _, e := range iss.Errors() {
			where := fmt.Sprintf("column %d", e.Location.Column()+1)
			if multiline {
				where = fmt.Sprintf("line %d, column %d of the expression", e.Location.Line(), e.Location.Column()+1)
			}
			msgs = append(msgs, fmt.Sprintf("%s (%s)", e.Message, where))
		}
		return nil, fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("must be true or false, not a %s", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(conditionCostLimit))
	if err != nil {
		return nil, err
	}
	return &condition{src: src, prg: prg}, nil
}

// eval runs the condition; any error (a missing list element, the cost
// limit, a panic in an extension) is returned, and the caller denies.
func (c *condition) eval(p *Policy, pr authn.Principal, req requestVar) (ok bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("panic: %v", r)
		}
	}()
	out, _, err := c.prg.Eval(map[string]any{
		"principal": p.principalVar(pr),
		"request":   req,
	})
	if err != nil {
		return false, err
	}
	b, isBool := out.Value().(bool)
	if !isBool {
		return false, fmt.Errorf("result is %v, not true or false", out.Type())
	}
	return b, nil
}

// principalVar builds the condition's view of pr.
func (p *Policy) principalVar(pr authn.Principal) principalVar {
	v := principalVar{ID: pr.ID, Kind: pr.Kind.String(), Groups: p.groupsOf(pr), IdPGroups: append([]string{}, pr.Groups...)}
	if pr.Kind == authn.KindWorkload {
		if id, err := spiffeid.FromString(pr.ID); err == nil {
			v.TrustDomain = id.TrustDomain().Name()
		}
	}
	sort.Strings(v.IdPGroups)
	return v
}

// groupsOf lists, sorted, the policy groups pr belongs to.
func (p *Policy) groupsOf(pr authn.Principal) []string {
	c := newCaller(pr)
	out := []string{}
	for _, name := range p.groupNames {
		if g := p.groupSets[name]; g != nil && g.match(c) {
			out = append(out, name)
		}
	}
	return out
}
