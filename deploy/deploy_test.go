package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer/awssts"
	"github.com/mayflyhq/mayfly/broker/issuer/gcp"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/issuer/vault"
	"github.com/mayflyhq/mayfly/broker/policy"
	"github.com/mayflyhq/mayfly/sdk/sidecar"
)

// The tests run in deploy/; paths are relative to it.
const (
	k8sDir        = "k8s"
	composeDir    = "compose"
	composeFile   = "compose/compose.yaml"
	composeConfig = "compose/mayflyd.yaml"
	composePol    = "compose/policy.yaml"
	alertsFile    = "prometheus/alerts.yaml"
	dashFile      = "grafana/mayfly-dashboard.json"
	dockerfile    = "docker/Dockerfile"
	metricsGo     = "../broker/metrics/metrics.go"
	namespace     = "mayfly"
	trustDomain   = "example.org"
	brokerID      = "spiffe://example.org/mayfly"
	demoID        = "spiffe://example.org/workload/demo"
)

// ---------------------------------------------------------------- helpers

// node walks decoded YAML or JSON (maps, lists, scalars) by keys.
func node(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any, keys ...string) string {
	s, _ := node(v, keys...).(string)
	return s
}

func list(v any, keys ...string) []any {
	l, _ := node(v, keys...).([]any)
	return l
}

func mapping(v any, keys ...string) map[string]any {
	m, _ := node(v, keys...).(map[string]any)
	return m
}

func integer(v any, keys ...string) (int, bool) {
	switch n := node(v, keys...).(type) {
	case int:
		return n, true
	case float64:
		return int(n), true
	}
	return 0, false
}

// yamlDocs decodes every document of a (multi-document) YAML stream.
func yamlDocs(t *testing.T, name string, data []byte) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for i := 1; ; i++ {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", name, i, err)
		}
		if doc == nil { // an empty document (a stray ---)
			continue
		}
		m, ok := doc.(map[string]any)
		if !ok {
			t.Fatalf("%s: document %d is a %T, not a mapping", name, i, doc)
		}
		docs = append(docs, m)
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func yamlFile(t *testing.T, name string) map[string]any {
	t.Helper()
	docs := yamlDocs(t, name, readFile(t, name))
	if len(docs) != 1 {
		t.Fatalf("%s: %d YAML documents, want 1", name, len(docs))
	}
	return docs[0]
}

// manifest is one Kubernetes object from deploy/k8s.
type manifest struct {
	file string
	doc  map[string]any
}

func (m manifest) kind() string { return str(m.doc, "kind") }
func (m manifest) name() string { return str(m.doc, "metadata", "name") }

// manifests reads every file kustomization.yaml lists, and checks that it
// lists every YAML file of deploy/k8s.
func manifests(t *testing.T) []manifest {
	t.Helper()
	kust := yamlFile(t, filepath.Join(k8sDir, "kustomization.yaml"))
	if str(kust, "namespace") != namespace {
		t.Errorf("kustomization.yaml: namespace %q, want %q", str(kust, "namespace"), namespace)
	}
	var listed []string
	for _, r := range list(kust, "resources") {
		listed = append(listed, fmt.Sprint(r))
	}
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			onDisk = append(onDisk, b)
		}
	}
	sort.Strings(listed)
	sort.Strings(onDisk)
	if !slices.Equal(listed, onDisk) {
		t.Errorf("kustomization.yaml lists %v; deploy/k8s holds %v", listed, onDisk)
	}
	var out []manifest
	for _, f := range onDisk {
		p := filepath.Join(k8sDir, f)
		for _, d := range yamlDocs(t, p, readFile(t, p)) {
			out = append(out, manifest{file: f, doc: d})
		}
	}
	if len(out) == 0 {
		t.Fatal("no manifests in deploy/k8s")
	}
	return out
}

func find(t *testing.T, ms []manifest, kind, name string) map[string]any {
	t.Helper()
	for _, m := range ms {
		if m.kind() == kind && m.name() == name {
			return m.doc
		}
	}
	t.Fatalf("deploy/k8s has no %s %q", kind, name)
	return nil
}

func podSpec(workload map[string]any) map[string]any {
	return mapping(workload, "spec", "template", "spec")
}

func container(t *testing.T, ps map[string]any, name string) map[string]any {
	t.Helper()
	for _, c := range list(ps, "containers") {
		if str(c, "name") == name {
			return c.(map[string]any)
		}
	}
	t.Fatalf("no container %q in %v", name, ps)
	return nil
}

// configMapData returns one key of a ConfigMap in deploy/k8s.
func configMapData(t *testing.T, ms []manifest, name, key string) string {
	t.Helper()
	s, ok := mapping(find(t, ms, "ConfigMap", name), "data")[key].(string)
	if !ok || s == "" {
		t.Fatalf("ConfigMap %s has no key %s", name, key)
	}
	return s
}

// k8sBrokerConfig is the mayflyd config embedded in the ConfigMap.
func k8sBrokerConfig(t *testing.T, ms []manifest) map[string]any {
	t.Helper()
	return yamlDocs(t, "ConfigMap mayflyd-config mayflyd.yaml", []byte(configMapData(t, ms, "mayflyd-config", "mayflyd.yaml")))[0]
}

// configPaths are the files and directories a broker config names, by
// key, and whether the broker writes there.
func configPaths(cfg map[string]any) map[string]struct {
	path     string
	writable bool
} {
	out := map[string]struct {
		path     string
		writable bool
	}{}
	add := func(key, p string, writable bool) {
		if p != "" {
			out[key] = struct {
				path     string
				writable bool
			}{p, writable}
		}
	}
	add("policy", str(cfg, "policy"), false)
	add("identity.workload_api", strings.TrimPrefix(str(cfg, "identity", "workload_api"), "unix://"), false)
	add("jwt.key_dir", str(cfg, "jwt", "key_dir"), true)
	add("issuers.vault.ca_file", str(cfg, "issuers", "vault", "ca_file"), false)
	add("issuers.vault.auth.approle.secret_id_file", str(cfg, "issuers", "vault", "auth", "approle", "secret_id_file"), false)
	add("issuers.vault.auth.token_file", str(cfg, "issuers", "vault", "auth", "token_file"), false)
	add("audit.file", str(cfg, "audit", "file"), true)
	add("audit.signing_key", str(cfg, "audit", "signing_key"), false)
	return out
}

// under reports whether p is dir or inside it, and the rest of p.
func under(p, dir string) (string, bool) {
	p, dir = path.Clean(p), path.Clean(dir)
	if p == dir {
		return "", true
	}
	if rest, ok := strings.CutPrefix(p, strings.TrimSuffix(dir, "/")+"/"); ok {
		return rest, true
	}
	return "", false
}

// k8sMount finds the volume mount of container c that holds p (the
// longest mount path), its volume and p relative to it.
func k8sMount(ps, c map[string]any, p string) (mount, volume map[string]any, rel string, ok bool) {
	best := -1
	for _, vm := range list(c, "volumeMounts") {
		mp := str(vm, "mountPath")
		if r, in := under(p, mp); in && len(mp) > best {
			best, mount, rel = len(mp), vm.(map[string]any), r
		}
	}
	if mount == nil {
		return nil, nil, "", false
	}
	for _, v := range list(ps, "volumes") {
		if str(v, "name") == str(mount, "name") {
			return mount, v.(map[string]any), rel, true
		}
	}
	return mount, nil, rel, false
}

// checkK8sFile checks that the file rel of a volume is there: a key of a
// ConfigMap in deploy/k8s, or an item of a Secret or ConfigMap volume.
func checkK8sFile(t *testing.T, ms []manifest, where string, volume map[string]any, rel string) {
	t.Helper()
	src := mapping(volume, "configMap")
	if src == nil {
		src = mapping(volume, "secret")
	}
	if src == nil || rel == "" {
		return
	}
	if items := list(src, "items"); items != nil {
		for _, it := range items {
			if str(it, "path") == rel {
				return
			}
		}
		t.Errorf("%s: %s is not among the items of volume %s", where, rel, str(volume, "name"))
		return
	}
	if cm := str(src, "name"); mapping(volume, "configMap") != nil {
		key, _, _ := strings.Cut(rel, "/")
		if _, ok := mapping(find(t, ms, "ConfigMap", cm), "data")[key]; !ok {
			t.Errorf("%s: ConfigMap %s has no key %s", where, cm, key)
		}
	}
}

// hostPathOf returns the node path of a hostPath volume.
func hostPathOf(volume map[string]any) string { return str(volume, "hostPath", "path") }

// hclString reads `key = "value"` from an HCL file (SPIRE configs).
func hclString(t *testing.T, where, hcl, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(key) + `\s*=\s*"([^"]*)"`).FindStringSubmatch(hcl)
	if m == nil {
		t.Fatalf("%s: no %s", where, key)
	}
	return m[1]
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

// ------------------------------------------------------------- Kubernetes

// TestDeployK8sManifests: every document of deploy/k8s is an object with
// apiVersion, kind and a name, in the namespace mayfly unless it is
// cluster-scoped, and no two share kind and name.
func TestDeployK8sManifests(t *testing.T) {
	ms := manifests(t)
	clusterScoped := map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true}
	seen := map[string]string{}
	for _, m := range ms {
		where := fmt.Sprintf("%s: %s %q", m.file, m.kind(), m.name())
		if str(m.doc, "apiVersion") == "" || m.kind() == "" || m.name() == "" {
			t.Errorf("%s: apiVersion, kind and metadata.name are required", where)
			continue
		}
		ns := str(m.doc, "metadata", "namespace")
		switch {
		case clusterScoped[m.kind()] && ns != "":
			t.Errorf("%s is cluster-scoped but names namespace %q", where, ns)
		case !clusterScoped[m.kind()] && ns != namespace:
			t.Errorf("%s: namespace %q, want %q", where, ns, namespace)
		}
		key := m.kind() + "/" + m.name()
		if other, dup := seen[key]; dup {
			t.Errorf("%s is also in %s", where, other)
		}
		seen[key] = m.file
		checkNoMountInsideReadOnlyVolume(t, where, podSpec(m.doc))
	}
	find(t, ms, "Namespace", namespace)
}

// checkNoMountInsideReadOnlyVolume: ConfigMap, Secret and projected
// volumes are read-only, so the runtime cannot make a mount point inside
// one; a mount there fails when the pod starts.
func checkNoMountInsideReadOnlyVolume(t *testing.T, where string, ps map[string]any) {
	t.Helper()
	readOnlyVol := map[string]bool{}
	for _, v := range list(ps, "volumes") {
		for _, k := range []string{"configMap", "secret", "projected", "downwardAPI"} {
			if node(v, k) != nil {
				readOnlyVol[str(v, "name")] = true
			}
		}
	}
	for _, c := range append(list(ps, "initContainers"), list(ps, "containers")...) {
		for _, outer := range list(c, "volumeMounts") {
			if !readOnlyVol[str(outer, "name")] || str(outer, "subPath") != "" {
				continue
			}
			for _, inner := range list(c, "volumeMounts") {
				if rel, in := under(str(inner, "mountPath"), str(outer, "mountPath")); in && rel != "" {
					t.Errorf("%s: container %s mounts %s inside the read-only volume %s at %s",
						where, str(c, "name"), str(inner, "mountPath"), str(outer, "name"), str(outer, "mountPath"))
				}
			}
		}
	}
}

// TestDeployK8sBroker checks the broker's Deployment, Service and
// PodDisruptionBudget, and that every file its config names is mounted.
func TestDeployK8sBroker(t *testing.T) {
	ms := manifests(t)
	cfg := k8sBrokerConfig(t, ms)
	d := find(t, ms, "Deployment", "mayflyd")
	if n, _ := integer(d, "spec", "replicas"); n < 2 {
		t.Errorf("Deployment mayflyd: replicas %d, want at least 2", n)
	}
	ps := podSpec(d)
	c := container(t, ps, "mayflyd")

	ports := map[string]int{}
	for _, p := range list(c, "ports") {
		n, _ := integer(p, "containerPort")
		ports[str(p, "name")] = n
	}
	for _, want := range []int{7443, 7444, 9464} {
		found := false
		for _, n := range ports {
			found = found || n == want
		}
		if !found {
			t.Errorf("container mayflyd: no port %d (ports %v)", want, ports)
		}
	}
	for key, want := range map[string]string{"listen": "grpc", "http_listen": "https", "metrics_listen": "metrics"} {
		if got := portOf(t, str(cfg, key)); got != ports[want] {
			t.Errorf("config %s port %d, container port %q is %d", key, got, want, ports[want])
		}
	}
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		get := mapping(c, probe, "httpGet")
		port, isNum := integer(get, "port")
		if !isNum {
			port = ports[str(get, "port")]
		}
		if str(get, "path") != "/healthz" || port != portOf(t, str(cfg, "metrics_listen")) {
			t.Errorf("%s: httpGet %v, want /healthz on the metrics port", probe, get)
		}
	}

	podSC, sc := mapping(ps, "securityContext"), mapping(c, "securityContext")
	if node(podSC, "runAsNonRoot") != true && node(sc, "runAsNonRoot") != true {
		t.Error("mayflyd: runAsNonRoot is not set")
	}
	if node(sc, "readOnlyRootFilesystem") != true || node(sc, "allowPrivilegeEscalation") != false {
		t.Errorf("container mayflyd: securityContext %v, want readOnlyRootFilesystem and no privilege escalation", sc)
	}
	if mapping(ps, "affinity", "podAntiAffinity") == nil {
		t.Error("mayflyd: no pod anti-affinity")
	}

	// The config file: --config names a key of the ConfigMap mounted there.
	args := list(c, "args")
	i := slices.IndexFunc(args, func(a any) bool { return a == "--config" })
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("container mayflyd: args %v have no --config FILE", args)
	}
	cfgPath := fmt.Sprint(args[i+1])
	_, vol, rel, ok := k8sMount(ps, c, cfgPath)
	if !ok || str(vol, "configMap", "name") != "mayflyd-config" || rel != "mayflyd.yaml" {
		t.Errorf("--config %s is not the key mayflyd.yaml of the ConfigMap mayflyd-config (volume %v)", cfgPath, vol)
	}

	// Every path of the config is on a volume, writable where the broker
	// writes (the root file system is read-only).
	for key, p := range configPaths(cfg) {
		mount, vol, rel, ok := k8sMount(ps, c, p.path)
		if !ok {
			t.Errorf("config %s: %s is on no volume of the mayflyd container", key, p.path)
			continue
		}
		if p.writable && (node(mount, "readOnly") == true || (vol["emptyDir"] == nil && vol["persistentVolumeClaim"] == nil)) {
			t.Errorf("config %s: %s is not on a writable volume (%v)", key, p.path, vol)
		}
		checkK8sFile(t, ms, "config "+key, vol, rel)
	}

	labels := mapping(d, "spec", "template", "metadata", "labels")
	selects := func(what string, sel map[string]any) {
		if len(sel) == 0 {
			t.Errorf("%s: empty selector", what)
		}
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s selects %s=%v; the broker's pods have %v", what, k, v, labels)
			}
		}
	}
	svc := find(t, ms, "Service", "mayflyd")
	selects("Service mayflyd", mapping(svc, "spec", "selector"))
	var svcPorts []int
	for _, p := range list(svc, "spec", "ports") {
		n, _ := integer(p, "port")
		svcPorts = append(svcPorts, n)
	}
	for _, want := range []int{7443, 7444, 9464} {
		if !slices.Contains(svcPorts, want) {
			t.Errorf("Service mayflyd: no port %d (ports %v)", want, svcPorts)
		}
	}
	pdb := find(t, ms, "PodDisruptionBudget", "mayflyd")
	selects("PodDisruptionBudget mayflyd", mapping(pdb, "spec", "selector", "matchLabels"))
}

// TestDeployBrokerConfigKeys: both broker configs (the Kubernetes
// ConfigMap's and the compose stack's) carry what a replicated broker
// needs. cmd/mayflyd's deploy files test loads them with the real loader.
func TestDeployBrokerConfigKeys(t *testing.T) {
	ms := manifests(t)
	for name, cfg := range map[string]map[string]any{
		"k8s ConfigMap mayflyd-config": k8sBrokerConfig(t, ms),
		composeConfig:                  yamlFile(t, composeConfig),
	} {
		for _, key := range [][]string{{"listen"}, {"http_listen"}, {"metrics_listen"}, {"policy"}, {"identity", "workload_api"}, {"jwt", "issuer_url"}} {
			if str(cfg, key...) == "" {
				t.Errorf("%s: %s is not set", name, strings.Join(key, "."))
			}
		}
		if tds := list(cfg, "trust_domains"); !slices.Contains(tds, any(trustDomain)) {
			t.Errorf("%s: trust_domains %v, want %s", name, tds, trustDomain)
		}
		if str(cfg, "leases", "store") != "redis" || len(list(cfg, "leases", "redis", "addrs")) == 0 {
			t.Errorf("%s: leases %v, want store: redis with redis.addrs (replicas share the leases)", name, mapping(cfg, "leases"))
		}
		if len(mapping(cfg, "audit")) == 0 {
			t.Errorf("%s: no audit section", name)
		}
		if str(cfg, "jwt_svid_audience") != brokerID {
			t.Errorf("%s: jwt_svid_audience %q, want the broker's SPIFFE ID %s", name, str(cfg, "jwt_svid_audience"), brokerID)
		}
	}
}

// policyDecoders are the params decoders of the issuers a broker config
// enables (jwt always), as the broker builds them: a policy naming an
// issuer the config lacks fails to load, as it would in the broker.
func policyDecoders(cfg map[string]any) map[string]func(*yaml.Node) (any, error) {
	dec := map[string]func(*yaml.Node) (any, error){
		"jwt": func(n *yaml.Node) (any, error) { return jwt.DecodeParams(n) },
	}
	all := map[string]func(*yaml.Node) (any, error){
		"vault":  func(n *yaml.Node) (any, error) { return vault.DecodeParams(n) },
		"awssts": func(n *yaml.Node) (any, error) { return awssts.DecodeParams(n) },
		"gcp":    func(n *yaml.Node) (any, error) { return gcp.DecodeParams(n) },
	}
	for name := range mapping(cfg, "issuers") {
		if d, ok := all[name]; ok {
			dec[name] = d
		}
	}
	return dec
}

// TestDeployPolicyFiles loads the deployments' policy with the broker's
// policy loader: deploy/compose/policy.yaml, which the compose stack
// mounts, and its copy in the Kubernetes ConfigMap.
func TestDeployPolicyFiles(t *testing.T) {
	ms := manifests(t)
	composePolicy := readFile(t, composePol)
	if got := configMapData(t, ms, "mayflyd-config", "policy.yaml"); got != string(composePolicy) {
		t.Errorf("ConfigMap mayflyd-config policy.yaml differs from %s; keep them the same", composePol)
	}
	for name, cfg := range map[string]map[string]any{
		"k8s": k8sBrokerConfig(t, ms), "compose": yamlFile(t, composeConfig),
	} {
		if base := path.Base(str(cfg, "policy")); base != "policy.yaml" {
			t.Errorf("%s broker config: policy %s, want a file named policy.yaml", name, str(cfg, "policy"))
		}
		p, err := policy.LoadFile(composePol, policy.Options{Issuers: policyDecoders(cfg)})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, td := range p.TrustDomains {
			if !slices.Contains(list(cfg, "trust_domains"), any(td)) {
				t.Errorf("%s: the policy names trust domain %s, which the broker does not accept", name, td)
			}
		}
		// Retired JWT keys must stay published as long as a token can live.
		retain := 24 * time.Hour
		if s := str(cfg, "jwt", "retain"); s != "" {
			if retain, err = time.ParseDuration(s); err != nil {
				t.Fatalf("%s: jwt.retain: %v", name, err)
			}
		}
		for _, e := range p.Entitlements {
			if e.Issuer == "jwt" && e.MaxTTL > retain {
				t.Errorf("%s: entitlement %s: max_ttl %s is longer than jwt.retain %s", name, e.Name, e.MaxTTL, retain)
			}
		}
	}
	p, err := policy.Parse(composePolicy, policy.Options{Issuers: policyDecoders(yamlFile(t, composeConfig))})
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for _, e := range p.Entitlements {
		for _, g := range e.Standing {
			held[g.Subject] = true
		}
	}
	if !held[demoID] {
		t.Errorf("the policy grants the demo workload %s nothing", demoID)
	}
}

// TestDeployK8sRedis: Redis persists leases (AOF, fsync every second) on a
// PersistentVolume, and the broker's address names its Service.
func TestDeployK8sRedis(t *testing.T) {
	ms := manifests(t)
	conf := map[string]string{}
	for _, line := range strings.Split(configMapData(t, ms, "redis", "redis.conf"), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && !strings.HasPrefix(f[0], "#") {
			conf[f[0]] = f[1]
		}
	}
	if conf["appendonly"] != "yes" || (conf["appendfsync"] != "everysec" && conf["appendfsync"] != "always") {
		t.Errorf("redis.conf: appendonly %q, appendfsync %q; want yes and everysec (or always)", conf["appendonly"], conf["appendfsync"])
	}
	sts := find(t, ms, "StatefulSet", "redis")
	ps := podSpec(sts)
	c := container(t, ps, "redis")
	confPath := ""
	for _, a := range list(c, "args") {
		if s := fmt.Sprint(a); strings.HasSuffix(s, ".conf") {
			confPath = s
		}
	}
	if _, vol, rel, ok := k8sMount(ps, c, confPath); !ok || str(vol, "configMap", "name") != "redis" || rel != "redis.conf" {
		t.Errorf("redis runs with config %q, which is not the ConfigMap redis", confPath)
	}
	var claims []string
	for _, v := range list(sts, "spec", "volumeClaimTemplates") {
		claims = append(claims, str(v, "metadata", "name"))
	}
	dataMounted := false
	for _, vm := range list(c, "volumeMounts") {
		dataMounted = dataMounted || (str(vm, "mountPath") == conf["dir"] && slices.Contains(claims, str(vm, "name")))
	}
	if !dataMounted {
		t.Errorf("redis: dir %q is not on a PersistentVolume (claims %v)", conf["dir"], claims)
	}

	addr := fmt.Sprint(list(k8sBrokerConfig(t, ms), "leases", "redis", "addrs")[0])
	host, _, _ := net.SplitHostPort(addr)
	svc := find(t, ms, "Service", strings.Split(host, ".")[0])
	found := false
	for _, p := range list(svc, "spec", "ports") {
		n, _ := integer(p, "port")
		found = found || n == portOf(t, addr)
	}
	if !found || mapping(svc, "spec", "selector")["app.kubernetes.io/name"] != "redis" {
		t.Errorf("leases.redis.addrs %s is not the Redis Service", addr)
	}
}

// spireEntry is one registration entry of entries.json.
type spireEntry struct {
	SpiffeID  string `json:"spiffe_id"`
	ParentID  string `json:"parent_id"`
	Selectors []struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"selectors"`
	DNSNames []string `json:"dns_names"`
}

// TestDeployK8sSpire: the SPIRE server (k8s_psat) and agent DaemonSet (k8s
// workload attestor) agree with each other and with the pods that use
// them, and the registration entries name the broker and demo workload by
// their service accounts.
func TestDeployK8sSpire(t *testing.T) {
	ms := manifests(t)
	find(t, ms, "StatefulSet", "spire-server")
	ds := find(t, ms, "DaemonSet", "spire-agent")

	server := configMapData(t, ms, "spire-server", "server.conf")
	agent := configMapData(t, ms, "spire-agent", "agent.conf")
	for what, conf := range map[string]string{"server.conf": server, "agent.conf": agent} {
		if hclString(t, what, conf, "trust_domain") != trustDomain {
			t.Errorf("%s: trust_domain is not %s", what, trustDomain)
		}
		if !strings.Contains(conf, `NodeAttestor "k8s_psat"`) {
			t.Errorf("%s: no k8s_psat node attestor", what)
		}
	}
	if !strings.Contains(agent, `WorkloadAttestor "k8s"`) {
		t.Error("agent.conf: no k8s workload attestor")
	}
	if cluster := hclString(t, "agent.conf", agent, "cluster"); !strings.Contains(server, strconv.Quote(cluster)+" = {") {
		t.Errorf("agent.conf: cluster %q is not among the server's k8s_psat clusters", cluster)
	}

	// The agent serves its socket in a node directory that the broker and
	// the demo workload mount.
	socket := hclString(t, "agent.conf", agent, "socket_path")
	aps := podSpec(ds)
	_, avol, _, ok := k8sMount(aps, container(t, aps, "spire-agent"), socket)
	if !ok || hostPathOf(avol) == "" {
		t.Fatalf("spire-agent: socket %s is not on a hostPath volume", socket)
	}
	if node(aps, "hostPID") != true {
		t.Error("spire-agent: the k8s workload attestor needs hostPID")
	}
	cfg := k8sBrokerConfig(t, ms)
	brokerSocket := strings.TrimPrefix(str(cfg, "identity", "workload_api"), "unix://")
	for _, w := range []struct{ deployment, container, socket string }{
		{"mayflyd", "mayflyd", brokerSocket},
		{"demo-workload", "mayfly-sidecar", strings.TrimPrefix(demoSidecar(t, ms).Identity.WorkloadAPI.Socket, "unix://")},
	} {
		ps := podSpec(find(t, ms, "Deployment", w.deployment))
		_, vol, rel, ok := k8sMount(ps, container(t, ps, w.container), w.socket)
		if !ok || hostPathOf(vol) != hostPathOf(avol) || rel != path.Base(socket) {
			t.Errorf("%s: Workload API socket %s is not the agent's %s on host path %s", w.deployment, w.socket, socket, hostPathOf(avol))
		}
	}

	// Registration entries: the broker and the demo workload by namespace
	// and service account, under the agents' node alias.
	var entries struct{ Entries []spireEntry }
	if err := json.Unmarshal([]byte(configMapData(t, ms, "spire-server", "entries.json")), &entries); err != nil {
		t.Fatalf("entries.json: %v", err)
	}
	aliases := map[string]bool{}
	for _, e := range entries.Entries {
		if e.ParentID == "spiffe://"+trustDomain+"/spire/server" {
			aliases[e.SpiffeID] = true
		}
	}
	for id, deployment := range map[string]string{brokerID: "mayflyd", demoID: "demo-workload"} {
		sa := str(podSpec(find(t, ms, "Deployment", deployment)), "serviceAccountName")
		find(t, ms, "ServiceAccount", sa)
		registered := false
		for _, e := range entries.Entries {
			var sel []string
			for _, s := range e.Selectors {
				sel = append(sel, s.Type+":"+s.Value)
			}
			if e.SpiffeID == id && aliases[e.ParentID] && slices.Contains(sel, "k8s:ns:"+namespace) && slices.Contains(sel, "k8s:sa:"+sa) {
				registered = true
			}
		}
		if !registered {
			t.Errorf("entries.json: %s is not registered for service account %s/%s under the agents' alias", id, namespace, sa)
		}
	}

	// The registration Job reads entries.json where the server pod mounts it.
	job := podSpec(find(t, ms, "Job", "spire-registration"))
	var dataArg string
	for _, c := range list(job, "containers") {
		args := list(c, "args")
		if i := slices.Index(args, any("-data")); i >= 0 && i+1 < len(args) {
			dataArg = fmt.Sprint(args[i+1])
		}
	}
	sps := podSpec(find(t, ms, "StatefulSet", "spire-server"))
	if _, vol, rel, ok := k8sMount(sps, container(t, sps, "spire-server"), dataArg); !ok || str(vol, "configMap", "name") != "spire-server" || rel != "entries.json" {
		t.Errorf("Job spire-registration: -data %q is not entries.json of the ConfigMap spire-server in the server pod", dataArg)
	}
}

// TestDeployK8sVault: the dev Vault is labelled as such, and the broker
// reaches it by a name its certificate carries.
func TestDeployK8sVault(t *testing.T) {
	ms := manifests(t)
	d := find(t, ms, "Deployment", "vault")
	if mapping(d, "metadata", "labels")["mayfly.example.org/not-for-production"] != "true" {
		t.Error("Deployment vault: not labelled not-for-production")
	}
	if !slices.Contains(list(container(t, podSpec(d), "vault"), "args"), any("-dev")) {
		t.Error("Deployment vault: not in dev mode; the comments say it is")
	}
	addr := str(k8sBrokerConfig(t, ms), "issuers", "vault", "address")
	if !strings.HasPrefix(addr, "https://") {
		t.Fatalf("issuers.vault.address %s: the broker needs https to a Vault that is not on loopback", addr)
	}
	host := strings.TrimPrefix(addr, "https://")
	name, _, _ := net.SplitHostPort(host)
	if !slices.Contains(list(find(t, ms, "Certificate", "vault-dev-tls"), "spec", "dnsNames"), any(name)) {
		t.Errorf("issuers.vault.address %s: %s is not a DNS name of the certificate vault-dev-tls", addr, name)
	}
	find(t, ms, "Service", strings.Split(name, ".")[0])
	find(t, ms, "Job", "vault-bootstrap")
}

func demoSidecar(t *testing.T, ms []manifest) *sidecar.Config {
	t.Helper()
	c, err := sidecar.ParseConfig([]byte(configMapData(t, ms, "demo-workload", "sidecar.yaml")), "/etc/mayfly")
	if err != nil {
		t.Fatalf("ConfigMap demo-workload sidecar.yaml: %v", err)
	}
	return c
}

// TestDeploySidecarConfigs parses the demo workload's sidecar configs
// (Kubernetes and compose) with the sidecar's own parser: they trust the
// broker's SPIFFE ID, reach a broker address, and ask only for what the
// policy grants the demo workload.
func TestDeploySidecarConfigs(t *testing.T) {
	ms := manifests(t)
	compose, err := sidecar.ParseConfig(readFile(t, filepath.Join(composeDir, "sidecar.yaml")), "/etc/mayfly")
	if err != nil {
		t.Fatalf("compose/sidecar.yaml: %v", err)
	}
	p, err := policy.LoadFile(composePol, policy.Options{Issuers: policyDecoders(yamlFile(t, composeConfig))})
	if err != nil {
		t.Fatal(err)
	}
	services := mapping(yamlFile(t, composeFile), "services")
	for name, c := range map[string]*sidecar.Config{"k8s": demoSidecar(t, ms), "compose": compose} {
		if c.Broker.ID != brokerID {
			t.Errorf("%s sidecar: broker.id %q, want %s", name, c.Broker.ID, brokerID)
		}
		host, _, err := net.SplitHostPort(c.Broker.Addr)
		if err != nil {
			t.Fatalf("%s sidecar: broker.addr: %v", name, err)
		}
		if port := portOf(t, c.Broker.Addr); port != 7443 {
			t.Errorf("%s sidecar: broker.addr %s is not the gRPC port 7443", name, c.Broker.Addr)
		}
		if name == "k8s" {
			find(t, ms, "Service", strings.Split(host, ".")[0])
		} else if services[host] == nil {
			t.Errorf("compose sidecar: broker.addr %s is not a compose service", c.Broker.Addr)
		}
		for _, e := range c.Entitlements {
			ent := p.Entitlement(e.Name)
			if ent == nil || !slices.ContainsFunc(ent.Standing, func(g *policy.StandingGrant) bool { return g.Subject == demoID }) {
				t.Errorf("%s sidecar: the policy gives the demo workload no standing grant of %s", name, e.Name)
			}
		}
	}
}

// ---------------------------------------------------------------- compose

// composeVolume finds the volume of a compose service that holds p: its
// source (a named volume, or a path relative to deploy/compose), whether
// it is read-only, and p relative to it.
func composeVolume(svc map[string]any, p string) (source string, readOnly bool, rel string, ok bool) {
	best := -1
	for _, v := range list(svc, "volumes") {
		parts := strings.Split(fmt.Sprint(v), ":")
		if len(parts) < 2 {
			continue
		}
		if r, in := under(p, parts[1]); in && len(parts[1]) > best {
			best, source, rel, ok = len(parts[1]), parts[0], r, true
			readOnly = len(parts) > 2 && strings.Contains(parts[2], "ro")
		}
	}
	return source, readOnly, rel, ok
}

// TestDeployCompose checks the compose stack: its services, that every
// file it mounts exists, that the brokers find every path of their config
// where the other services put it, and that Prometheus and Grafana get
// the alert rules and the dashboard.
func TestDeployCompose(t *testing.T) {
	c := yamlFile(t, composeFile)
	services := mapping(c, "services")
	for _, want := range []string{"redis", "vault", "spire-server", "spire-agent", "mayflyd-1", "mayflyd-2", "prometheus", "grafana"} {
		if services[want] == nil {
			t.Errorf("compose.yaml: no service %s", want)
		}
	}
	for name, s := range services {
		for _, v := range list(s, "volumes") {
			src, _, _ := strings.Cut(fmt.Sprint(v), ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join(composeDir, src)); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			}
		}
	}
	build := mapping(services, "mayflyd-1", "build")
	if _, err := os.Stat(filepath.Join(composeDir, str(build, "context"), str(build, "dockerfile"))); err != nil {
		t.Errorf("mayflyd-1 build: %v", err)
	}

	redisCmd := strings.Join(strings.Fields(fmt.Sprint(list(services, "redis", "command"))), " ")
	if !strings.Contains(redisCmd, "--appendonly yes") || !regexp.MustCompile(`--appendfsync (everysec|always)`).MatchString(redisCmd) {
		t.Errorf("redis command %s: want --appendonly yes --appendfsync everysec", redisCmd)
	}

	cfg := yamlFile(t, composeConfig)
	for _, b := range []string{"mayflyd-1", "mayflyd-2"} {
		svc := mapping(services, b)
		cmd := list(svc, "command")
		i := slices.Index(cmd, any("--config"))
		if i < 0 || i+1 >= len(cmd) {
			t.Fatalf("%s: command %v has no --config", b, cmd)
		}
		if src, _, rel, ok := composeVolume(svc, fmt.Sprint(cmd[i+1])); !ok || src != "./mayflyd.yaml" || rel != "" {
			t.Errorf("%s: --config %v is not ./mayflyd.yaml", b, cmd[i+1])
		}
		if src, _, _, _ := composeVolume(svc, str(cfg, "policy")); src != "./policy.yaml" {
			t.Errorf("%s: policy %s is not ./policy.yaml", b, str(cfg, "policy"))
		}
		if svc["read_only"] != true {
			t.Errorf("%s: read_only is not set", b)
		}
		if str(svc, "labels", "org.example.mayfly.workload") != "broker" {
			t.Errorf("%s: not labelled org.example.mayfly.workload=broker (its SPIRE selector)", b)
		}
		for key, p := range configPaths(cfg) {
			src, ro, _, ok := composeVolume(svc, p.path)
			switch {
			case !ok:
				t.Errorf("%s: config %s: %s is on no volume", b, key, p.path)
			case p.writable && (ro || strings.HasPrefix(src, ".")):
				t.Errorf("%s: config %s: %s is not on a writable volume", b, key, p.path)
			}
		}
	}
	bootstrap := string(readFile(t, filepath.Join(composeDir, "spire-bootstrap.sh")))
	if !strings.Contains(bootstrap, "docker:label:org.example.mayfly.workload:broker") || !strings.Contains(bootstrap, `"spiffe://$TD/mayfly"`) {
		t.Error("spire-bootstrap.sh does not register the broker by its Docker label")
	}

	// Files one service writes and a broker reads: the same volume, the
	// same name in it.
	broker := mapping(services, "mayflyd-1")
	same := func(what string, svc map[string]any, written, read string) {
		t.Helper()
		ws, _, wrel, wok := composeVolume(svc, written)
		rs, _, rrel, rok := composeVolume(broker, read)
		if !wok || !rok || ws != rs || wrel != rrel || strings.HasPrefix(ws, ".") {
			t.Errorf("%s: written as %s (%s/%s), read by the broker as %s (%s/%s)", what, written, ws, wrel, read, rs, rrel)
		}
	}
	vaultCmd := fmt.Sprint(list(services, "vault", "command"))
	certDir := regexp.MustCompile(`-dev-tls-cert-dir=(\S+?)[\] ]`).FindStringSubmatch(vaultCmd + " ")
	if certDir == nil {
		t.Fatalf("vault command %s: no -dev-tls-cert-dir", vaultCmd)
	}
	same("Vault's CA (issuers.vault.ca_file)", mapping(services, "vault"), path.Join(certDir[1], "vault-ca.pem"), str(cfg, "issuers", "vault", "ca_file"))
	same("the AppRole secret_id", mapping(services, "vault-bootstrap"), str(services, "vault-bootstrap", "environment", "SECRET_ID_OUT"),
		str(cfg, "issuers", "vault", "auth", "approle", "secret_id_file"))
	keygen := string(readFile(t, filepath.Join(composeDir, "audit-keygen.sh")))
	key := regexp.MustCompile(`(?m)^key=(\S+)`).FindStringSubmatch(keygen)
	if key == nil {
		t.Fatal("audit-keygen.sh: no key=PATH")
	}
	same("the audit signing key", mapping(services, "audit-keygen"), key[1], str(cfg, "audit", "signing_key"))
	agentConf := string(readFile(t, filepath.Join(composeDir, "spire-agent.conf")))
	same("the SPIRE agent socket", mapping(services, "spire-agent"), hclString(t, "spire-agent.conf", agentConf, "socket_path"),
		strings.TrimPrefix(str(cfg, "identity", "workload_api"), "unix://"))

	// Prometheus scrapes both brokers on their metrics port and loads the
	// alert rules.
	prom := yamlFile(t, filepath.Join(composeDir, "prometheus.yml"))
	var targets []string
	for _, sc := range list(prom, "scrape_configs") {
		if str(sc, "job_name") != "mayflyd" {
			continue
		}
		for _, st := range list(sc, "static_configs") {
			for _, tg := range list(st, "targets") {
				targets = append(targets, fmt.Sprint(tg))
			}
		}
	}
	var want []string
	for _, b := range []string{"mayflyd-1", "mayflyd-2"} {
		want = append(want, net.JoinHostPort(b, strconv.Itoa(portOf(t, str(cfg, "metrics_listen")))))
	}
	sort.Strings(targets)
	if !slices.Equal(targets, want) {
		t.Errorf("prometheus.yml: job mayflyd scrapes %v, want %v", targets, want)
	}
	rulesMounted := false
	for _, v := range list(services, "prometheus", "volumes") {
		parts := strings.Split(fmt.Sprint(v), ":")
		if parts[0] != "../prometheus/alerts.yaml" {
			continue
		}
		for _, rf := range list(prom, "rule_files") {
			if ok, _ := path.Match(fmt.Sprint(rf), parts[1]); ok {
				rulesMounted = true
			}
		}
	}
	if !rulesMounted {
		t.Error("compose: prometheus does not load ../prometheus/alerts.yaml through rule_files")
	}
	dashDir := str(list(yamlFile(t, filepath.Join(composeDir, "grafana", "dashboards.yaml")), "providers")[0], "options", "path")
	dashMounted := false
	for _, v := range list(services, "grafana", "volumes") {
		parts := strings.Split(fmt.Sprint(v), ":")
		if _, in := under(parts[1], dashDir); in && parts[0] == "../grafana/mayfly-dashboard.json" {
			dashMounted = true
		}
	}
	if !dashMounted {
		t.Errorf("compose: grafana does not provision ../grafana/mayfly-dashboard.json from %s", dashDir)
	}
}

// TestDeployDockerfile: the image builds the three binaries statically
// from what the build copies, onto distroless nonroot, and no Dockerfile
// sits at the repository root.
func TestDeployDockerfile(t *testing.T) {
	if _, err := os.Stat("../Dockerfile"); err == nil {
		t.Error("a Dockerfile at the repository root: it belongs in deploy/docker")
	}
	df := string(readFile(t, dockerfile))
	var froms []string
	for _, line := range strings.Split(df, "\n") {
		if strings.HasPrefix(line, "FROM ") {
			froms = append(froms, line)
		}
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "FROM golang:1.26 ") ||
		!strings.Contains(froms[len(froms)-1], "distroless/static") || !strings.Contains(froms[len(froms)-1], "nonroot") {
		t.Errorf("Dockerfile stages %v: want golang:1.26, then distroless static nonroot", froms)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/mayflyd ", "./cmd/mayfly ", "./cmd/mayfly-sidecar", `ENTRYPOINT ["/usr/local/bin/mayflyd"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile: no %q", want)
		}
	}
	// The build copies only some top-level directories: every package the
	// binaries are built from must be in one of them.
	copied := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^COPY ([a-z][\w.-]*)/ `).FindAllStringSubmatch(df, -1) {
		copied[m[1]] = true
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}",
		"../cmd/mayflyd", "../cmd/mayfly", "../cmd/mayfly-sidecar").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a module dependency
		}
		if top := strings.Split(filepath.ToSlash(rel), "/")[0]; !copied[top] {
			t.Errorf("the binaries need %s, which the Dockerfile does not copy", rel)
		}
	}
}

// ---------------------------------------------------------------- metrics

// declaredMetrics reads the metric names broker/metrics declares: its
// string constants that start with mayfly_.
func declaredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), metricsGo, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if s, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(s, "mayfly_") {
				names[s] = true
			}
		}
		return true
	})
	if len(names) == 0 {
		t.Fatalf("%s declares no mayfly_ metric", metricsGo)
	}
	return names
}

// promqlKeywords are the words of PromQL that are not metric names.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "offset": true, "bool": true, "atan2": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true, "inf": true, "nan": true,
}

// promqlMetrics returns the metric names an expression selects: its
// identifiers that are not functions, keywords, label names (in {...} or
// by/without/on/ignoring lists), durations, numbers or strings.
func promqlMetrics(expr string) []string {
	var out []string
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
	isIdent := func(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }
	next := func(i int) byte { // next non-space byte at or after i
		for ; i < len(expr); i++ {
			if expr[i] != ' ' && expr[i] != '\t' && expr[i] != '\n' {
				return expr[i]
			}
		}
		return 0
	}
	skipTo := func(i int, open, close byte) int { // i at open; returns index after the matching close
		depth := 0
		for ; i < len(expr); i++ {
			switch expr[i] {
			case open:
				depth++
			case close:
				depth--
				if depth == 0 {
					return i + 1
				}
			case '"', '\'', '`':
				q := expr[i]
				for i++; i < len(expr) && expr[i] != q; i++ {
					if expr[i] == '\\' {
						i++
					}
				}
			}
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '{':
			i = skipTo(i, '{', '}')
		case c == '[':
			i = skipTo(i, '[', ']')
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for ; j < len(expr) && expr[j] != c; j++ {
				if expr[j] == '\\' {
					j++
				}
			}
			i = j + 1
		case c >= '0' && c <= '9', c == '.':
			for i++; i < len(expr) && (isIdent(expr[i]) || expr[i] == '.'); i++ {
			}
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			switch {
			case (word == "by" || word == "without" || word == "on" || word == "ignoring" ||
				word == "group_left" || word == "group_right") && next(j) == '(':
				k := strings.IndexByte(expr[j:], '(') + j
				j = skipTo(k, '(', ')')
			case promqlKeywords[strings.ToLower(word)], next(j) == '(':
			default:
				out = append(out, word)
			}
			i = j
		default:
			i++
		}
	}
	return out
}

// knownMetric reports whether name is a declared metric, or a series of a
// declared histogram, or Prometheus's own up.
func knownMetric(declared map[string]bool, name string) bool {
	if name == "up" || declared[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && declared[base] {
			return true
		}
	}
	return false
}

func TestDeployPromQLMetrics(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (le) (rate(mayfly_x_bucket{job="mayflyd",le!="+Inf"}[$__rate_interval]))`: {"mayfly_x_bucket"},
		`absent(up{job="mayflyd"} == 1)`:                                   {"up"},
		`max(a) > 0 and on (instance) b offset 5m`:                         {"a", "b"},
		`histogram_quantile(0.99, sum without (x, y) (rate(c[5m]))) > 2e0`: {"c"},
	} {
		if got := promqlMetrics(expr); !slices.Equal(got, want) {
			t.Errorf("promqlMetrics(%s) = %v, want %v", expr, got, want)
		}
	}
}

// alertRule is one rule of alerts.yaml.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func alertRules(t *testing.T) map[string]alertRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Name  string      `yaml:"name"`
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, alertsFile)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	rules := map[string]alertRule{}
	for _, g := range f.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("%s: group %q without a name or rules", alertsFile, g.Name)
		}
		for _, r := range g.Rules {
			if _, dup := rules[r.Alert]; dup || r.Alert == "" {
				t.Errorf("%s: alert %q is unnamed or appears twice", alertsFile, r.Alert)
			}
			rules[r.Alert] = r
		}
	}
	return rules
}

// TestDeployAlertRules: the rule file has the alerts operations need,
// each with a severity, a summary, a description and a runbook, on the
// metrics and for the durations they are meant to watch.
func TestDeployAlertRules(t *testing.T) {
	rules := alertRules(t)
	for name, want := range map[string]struct {
		metric string
		for_   time.Duration
	}{
		"MayflyIrrevocableLease":    {"mayfly_irrevocable_leases_total", 0},
		"MayflyRevocationsOverdue":  {"mayfly_revocations_overdue", 2 * time.Minute},
		"MayflyRevocationLagHigh":   {"mayfly_revocation_lag_seconds_bucket", 5 * time.Minute},
		"MayflyAuditAppendFailures": {"mayfly_audit_append_failures_total", 0},
		"MayflyLeaseStoreDataLoss":  {"mayfly_lease_store_data_loss_total", 0},
		"MayflyReviewsOverdue":      {"mayfly_reviews_overdue", 15 * time.Minute},
		"MayflyPolicyReloadFailed":  {"mayfly_policy_last_reload_success", 0},
		"MayflyNoBrokerUp":          {"up", 0},
	} {
		r, ok := rules[name]
		if !ok {
			t.Errorf("%s: no alert %s", alertsFile, name)
			continue
		}
		if !slices.Contains(promqlMetrics(r.Expr), want.metric) {
			t.Errorf("alert %s: expr %q does not watch %s", name, r.Expr, want.metric)
		}
		if want.for_ != 0 {
			if d, err := time.ParseDuration(r.For); err != nil || d != want.for_ {
				t.Errorf("alert %s: for %q, want %s", name, r.For, want.for_)
			}
		}
	}
	for name, r := range rules {
		if s := r.Labels["severity"]; s != "page" && s != "ticket" {
			t.Errorf("alert %s: severity %q, want page or ticket", name, s)
		}
		for _, a := range []string{"summary", "description", "runbook"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("alert %s: no %s annotation", name, a)
			}
		}
		if !strings.Contains(r.Expr, `job="mayflyd"`) {
			t.Errorf("alert %s: expr does not select job=\"mayflyd\" (the scrape job of the brokers)", name)
		}
	}
}

// dashPanel is what the test reads of a Grafana panel.
type dashPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // of a collapsed row
}

type dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func readDashboard(t *testing.T) (dashboard, []dashPanel) {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readFile(t, dashFile), &d); err != nil {
		t.Fatalf("%s: %v", dashFile, err)
	}
	var panels []dashPanel
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			panels = append(panels, p)
		}
	}
	walk(d.Panels)
	return d, panels
}

// TestDeployDashboard: the dashboard is a current Grafana dashboard with
// a Prometheus data source variable, every panel queries through it, and
// together the panels show every metric operations watch.
func TestDeployDashboard(t *testing.T) {
	d, panels := readDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("%s: uid %q, title %q, schemaVersion %d; want both and schemaVersion >= 36", dashFile, d.UID, d.Title, d.SchemaVersion)
	}
	dsVar := ""
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Query == "prometheus" {
			dsVar = v.Name
		}
	}
	if dsVar == "" {
		t.Fatalf("%s: no Prometheus data source variable", dashFile)
	}
	ids := map[int]bool{}
	shown := map[string]bool{}
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d is used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Datasource == nil || p.Datasource.UID != "${"+dsVar+"}" {
			t.Errorf("panel %q: data source %v, want ${%s}", p.Title, p.Datasource, dsVar)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			ms := promqlMetrics(tg.Expr)
			if len(ms) == 0 {
				t.Errorf("panel %q: query %s %q selects no metric", p.Title, tg.RefID, tg.Expr)
			}
			for _, m := range ms {
				shown[m] = true
			}
		}
	}
	for _, m := range []string{
		"mayfly_issue_duration_seconds_count", "mayfly_issue_duration_seconds_bucket",
		"mayfly_decisions_total", "mayfly_revocations_total", "mayfly_revocation_lag_seconds_bucket",
		"mayfly_irrevocable_leases_total", "mayfly_revocation_retries_total", "mayfly_leases",
		"mayfly_revocations_overdue", "mayfly_access_requests_pending", "mayfly_reviews_overdue",
		"mayfly_audit_events_total", "mayfly_audit_append_failures_total", "mayfly_policy_reloads_total",
		"mayfly_policy_last_reload_success", "mayfly_lease_store_data_loss_total",
	} {
		if !shown[m] {
			t.Errorf("%s: no panel shows %s", dashFile, m)
		}
	}
}

// TestDeployMetricNamesDeclared: every metric an alert rule or a
// dashboard panel selects is declared in broker/metrics (or is
// Prometheus's up), so a renamed metric cannot leave a silent alert or an
// empty panel behind.
func TestDeployMetricNamesDeclared(t *testing.T) {
	declared := declaredMetrics(t)
	used := map[string][]string{} // metric -> where
	for name, r := range alertRules(t) {
		for _, m := range promqlMetrics(r.Expr) {
			used[m] = append(used[m], "alert "+name)
		}
	}
	_, panels := readDashboard(t)
	for _, p := range panels {
		for _, tg := range p.Targets {
			for _, m := range promqlMetrics(tg.Expr) {
				used[m] = append(used[m], fmt.Sprintf("panel %q", p.Title))
			}
		}
	}
	var missing []string
	for m, where := range used {
		if !knownMetric(declared, m) {
			slices.Sort(where)
			missing = append(missing, fmt.Sprintf("%s (%s)", m, strings.Join(slices.Compact(where), ", ")))
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("not declared in %s: %s", metricsGo, m)
	}
}
