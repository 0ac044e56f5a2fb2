// Package deploy holds Mayfly's deployment artifacts and the tests that
// keep them true to the code. It has no Go code of its own:
//
//   - k8s/: Kubernetes manifests (kustomization.yaml lists them): the
//     broker, Redis, SPIRE server and agent, a dev-mode Vault and a demo
//     workload, in the namespace mayfly, trust domain example.org;
//   - docker/Dockerfile: the image with mayflyd, mayfly and mayfly-sidecar;
//   - compose/: a local stack of the same pieces, two broker replicas,
//     Prometheus and Grafana;
//   - grafana/: the dashboard; prometheus/: the alert rules;
//   - mayflyd.example.yaml: every key of the broker's config file.
//
// deploy_test.go parses every manifest, loads the policy files with the
// broker's policy loader and the sidecar configs with the sidecar's, checks
// that the files and paths the configs name are mounted where they say,
// and that every metric an alert rule or a dashboard panel names is one
// the broker declares (broker/metrics). cmd/mayflyd's deploy files test
// loads the broker configs with the broker's config loader.
//
// deploy/testenv, a package of its own, starts real services for other
// packages' tests.
package deploy
