package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// node is one Skiff service of the compose file: its role and parsed flags.
type node struct {
	svc   types.ServiceConfig
	role  string
	flags map[string]string
}

func (n node) flag(name string) string { return n.flags[name] }

// Flags each role must be given in the compose file: the CLI's required ones plus what the
// cluster needs here (an HTTP listener for the healthcheck, an advertised address for clients).
var requiredFlags = map[string][]string{
	"controller": {"node-id", "controller-listen", "voters", "data-dir", "http-listen"},
	"broker":     {"node-id", "kafka-listen", "kafka-advertise", "controllers", "storage", "http-listen", "data-dir"},
}

// checkCluster checks the Skiff wiring: roles and flags against the binary, the quorum, the
// storage and credentials, the listeners, advertised addresses and health probes.
func checkCluster(ctx context.Context, r *report, p *types.Project, file string, image *imageInfo, cli *skiffCLI) {
	name := func(s string) string { return "cluster: " + s }
	services := sortedServices(p)

	// The Skiff services are those running the image built from the Dockerfile.
	skiffImages := map[string]bool{}
	for _, s := range services {
		if s.Build != nil && filepath.Base(s.Build.Dockerfile) == "Dockerfile" {
			skiffImages[s.Image] = true
		}
	}
	var nodes []node
	var problems []string
	for _, s := range services {
		if !skiffImages[s.Image] {
			continue
		}
		if len(s.Entrypoint) > 0 {
			problems = append(problems, fmt.Sprintf("%s overrides the entrypoint %s", s.Name, quoteAll(s.Entrypoint)))
		}
		if len(s.Command) == 0 {
			problems = append(problems, fmt.Sprintf("%s has no command (role)", s.Name))
			continue
		}
		nodes = append(nodes, node{svc: s, role: s.Command[0]})
	}
	controllers, brokers := byRole(nodes, "controller"), byRole(nodes, "broker")
	if len(controllers) < 3 || len(controllers)%2 == 0 {
		problems = append(problems, fmt.Sprintf("%s: a quorum that survives a failure needs an odd number ≥ 3", plural(len(controllers), "controller")))
	}
	if len(brokers) < 2 {
		problems = append(problems, fmt.Sprintf("%s: failover needs at least 2", plural(len(brokers), "broker")))
	}
	for _, n := range nodes {
		if n.role != "controller" && n.role != "broker" {
			problems = append(problems, fmt.Sprintf("%s runs `skiff %s`, not a cluster role", n.svc.Name, n.role))
		}
	}
	r.check(name(fmt.Sprintf("%s and %s run the skiff image", plural(len(controllers), "controller"), plural(len(brokers), "broker"))), problems)

	// Flags and SKIFF_* variables, against `skiff <role> --help` of the built binary.
	flagCheck := name("every flag and SKIFF_* variable exists in `skiff <role> --help` (with an allowed value)")
	problems = nil
	missingRole := map[string]bool{}
	for i := range nodes {
		n := &nodes[i]
		var help *roleHelp
		if cli != nil {
			h, err := cli.role(n.role)
			if err != nil && !missingRole[n.role] {
				missingRole[n.role] = true
				problems = append(problems, fmt.Sprintf("the binary has no `%s` role, which %s runs: %v", n.role, n.svc.Name, err))
			}
			help = h
		}
		flags, argProblems := parseArgs(n.svc.Command[1:], help)
		n.flags = flags
		for _, ap := range argProblems {
			problems = append(problems, n.svc.Name+": "+ap)
		}
		if help == nil {
			continue
		}
		for _, f := range sortedKeys(flags) {
			fh, ok := help.flags[f]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s: `skiff %s` has no flag --%s", n.svc.Name, n.role, f))
			case len(fh.values) > 0 && !slices.Contains(fh.values, flags[f]):
				problems = append(problems, fmt.Sprintf("%s: --%s=%s is not one of %s", n.svc.Name, f, flags[f], strings.Join(fh.values, ", ")))
			case fh.role != "" && fh.role != n.role:
				problems = append(problems, fmt.Sprintf("%s: --%s is a %s-role flag (says `skiff %s --help`), this is a %s", n.svc.Name, f, fh.role, n.role, n.role))
			}
		}
		for _, env := range sortedKeys(n.svc.Environment) {
			if _, ok := help.envs[env]; strings.HasPrefix(env, "SKIFF_") && !ok {
				problems = append(problems, fmt.Sprintf("%s: `skiff %s` does not read %s", n.svc.Name, n.role, env))
			}
		}
	}
	if cli == nil {
		for _, n := range nodes {
			_, argProblems := parseArgs(n.svc.Command[1:], nil)
			problems = append(problems, argProblems...)
		}
		if len(problems) == 0 {
			r.skip(flagCheck, "no skiff binary to ask")
		} else {
			r.fail(flagCheck, problems...)
		}
	} else {
		r.check(flagCheck, problems)
	}

	controllers, brokers = byRole(nodes, "controller"), byRole(nodes, "broker") // now with flags

	problems = nil
	for _, n := range nodes {
		for _, f := range requiredFlags[n.role] {
			if _, ok := n.flags[f]; !ok {
				problems = append(problems, fmt.Sprintf("%s: --%s is not set", n.svc.Name, f))
			}
		}
	}
	r.check(name("each role gets the flags the cluster needs"), problems)

	// Node ids: integers, unique over every process (controllers and brokers are separate ones).
	problems = nil
	ids := map[string]string{}
	for _, n := range nodes {
		id := n.flag("node-id")
		if _, err := strconv.ParseUint(id, 10, 31); err != nil {
			problems = append(problems, fmt.Sprintf("%s: --node-id=%q is not a non-negative integer", n.svc.Name, id))
			continue
		}
		if other, dup := ids[id]; dup {
			problems = append(problems, fmt.Sprintf("node id %s used by both %s and %s", id, other, n.svc.Name))
		}
		ids[id] = n.svc.Name
	}
	r.check(name("node ids are unique integers"), problems)

	// The quorum: every controller lists the same voters, the voters are exactly the
	// controllers (id and address), and each voter address reaches that controller's listener.
	problems = nil
	var voters map[string]string // id → host:port
	for _, n := range controllers {
		v, err := parseVoters(n.flag("voters"))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: --voters: %v", n.svc.Name, err))
			continue
		}
		if voters == nil {
			voters = v
		} else if !mapsEqual(voters, v) {
			problems = append(problems, fmt.Sprintf("%s: --voters=%s differs from %s's", n.svc.Name, n.flag("voters"), controllers[0].svc.Name))
		}
	}
	for _, n := range controllers {
		addr, ok := voters[n.flag("node-id")]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s (node %s) is not among the voters", n.svc.Name, n.flag("node-id")))
			continue
		}
		problems = append(problems, reaches(p, n, addr, "controller-listen")...)
	}
	if len(voters) != len(controllers) {
		problems = append(problems, fmt.Sprintf("%s but %s", plural(len(voters), "voter"), plural(len(controllers), "controller")))
	}
	r.check(name("voters agree across controllers and name every controller's listener"), problems)

	// Brokers find every controller.
	problems = nil
	var voterAddrs []string
	for _, a := range voters {
		voterAddrs = append(voterAddrs, a)
	}
	slices.Sort(voterAddrs)
	for _, n := range brokers {
		list := splitList(n.flag("controllers"))
		slices.Sort(list)
		if !slices.Equal(list, voterAddrs) {
			problems = append(problems, fmt.Sprintf("%s: --controllers=%s, the voters are %s", n.svc.Name, n.flag("controllers"), strings.Join(voterAddrs, ",")))
		}
		for _, c := range controllers {
			if d, ok := n.svc.DependsOn[c.svc.Name]; !ok || d.Condition != types.ServiceConditionHealthy {
				problems = append(problems, fmt.Sprintf("%s does not wait for %s to be healthy", n.svc.Name, c.svc.Name))
			}
		}
	}
	r.check(name("every broker's --controllers lists every voter, and it waits for them"), problems)

	checkStorage(r, p, nodes, name)
	checkListeners(r, p, nodes, brokers, image, name)

	// The same wiring must hold when SKIFF_HOST_IP moves the Kafka ports to another interface.
	alt := "192.0.2.10" // TEST-NET-1: never a real address
	p2, err := loadCompose(ctx, file, []string{"SKIFF_HOST_IP=" + alt})
	if err != nil {
		r.fail(name("SKIFF_HOST_IP="+alt+" loads"), err.Error())
		return
	}
	problems = nil
	for _, b := range brokers {
		s := p2.Services[b.svc.Name]
		s.Name = b.svc.Name
		flags, _ := parseArgs(s.Command[1:], nil)
		host, port, err := net.SplitHostPort(flags["kafka-advertise"])
		if err != nil || host != alt {
			problems = append(problems, fmt.Sprintf("%s advertises %q with SKIFF_HOST_IP=%s", b.svc.Name, flags["kafka-advertise"], alt))
			continue
		}
		if pc := publishedAs(s, port); pc == nil || pc.HostIP != alt {
			problems = append(problems, fmt.Sprintf("%s: advertised port %s is not published on %s", b.svc.Name, port, alt))
		}
	}
	r.check(name("with SKIFF_HOST_IP set, brokers advertise and publish on that address"), problems)
}

// checkStorage: one bucket, created by a one-shot before anyone uses it; MinIO reachable at
// the endpoint the nodes use; the nodes' credentials are MinIO's.
func checkStorage(r *report, p *types.Project, nodes []node, name func(string) string) {
	services := sortedServices(p)
	var minio *types.ServiceConfig
	for i, s := range services {
		if strings.Contains(s.Image, "minio/minio") {
			minio = &services[i]
		}
	}
	// Buckets created by `mc mb … alias/bucket` in some service's command.
	mb := regexp.MustCompile(`mc\s+mb\b[^&;|]*?\s[A-Za-z0-9_-]+/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])`)
	aliasSet := regexp.MustCompile(`mc\s+alias\s+set\s+\S+\s+(\S+)`)
	created := map[string]string{} // bucket → service
	var initAliases []string
	for _, s := range services {
		text := strings.Join(append(append([]string{}, s.Entrypoint...), s.Command...), " ")
		for _, m := range mb.FindAllStringSubmatch(text, -1) {
			created[m[1]] = s.Name
		}
		for _, m := range aliasSet.FindAllStringSubmatch(text, -1) {
			initAliases = append(initAliases, m[1])
		}
	}

	var problems []string
	if minio == nil {
		problems = append(problems, "no MinIO service")
	}
	urls := map[string]bool{}
	for _, n := range nodes {
		storage := n.flag("storage")
		if storage == "" {
			continue
		}
		urls[storage] = true
		u, err := url.Parse(storage)
		if err != nil || u.Scheme != "s3" || u.Host == "" {
			problems = append(problems, fmt.Sprintf("%s: --storage=%s is not s3://bucket/prefix", n.svc.Name, storage))
			continue
		}
		creator, ok := created[u.Host]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: bucket %q of --storage is created by no service (mc mb)", n.svc.Name, u.Host))
		} else if d, ok := n.svc.DependsOn[creator]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
			problems = append(problems, fmt.Sprintf("%s does not wait for %s (which creates bucket %s) to complete", n.svc.Name, creator, u.Host))
		}
		endpoint := n.flag("s3-endpoint")
		if minio != nil && !endpointReaches(endpoint, *minio) {
			problems = append(problems, fmt.Sprintf("%s: --s3-endpoint=%q does not reach the %s service's API port", n.svc.Name, endpoint, minio.Name))
		}
	}
	if len(urls) > 1 {
		problems = append(problems, fmt.Sprintf("the nodes use different storage URLs %s: a cluster shares one", quoteAll(sortedKeys(urls))))
	}
	if minio != nil {
		for _, a := range initAliases {
			if !endpointReaches(a, *minio) {
				problems = append(problems, fmt.Sprintf("mc alias %q does not reach the %s service's API port", a, minio.Name))
			}
		}
	}
	r.check(name(fmt.Sprintf("storage: the bucket is created before use and the endpoint is MinIO's (%s)", strings.Join(sortedKeys(urls), ", "))), problems)

	problems = nil
	if minio != nil {
		user, pass := env(*minio, "MINIO_ROOT_USER"), env(*minio, "MINIO_ROOT_PASSWORD")
		if len(user) < 3 || len(pass) < 8 {
			problems = append(problems, "MinIO refuses to start without MINIO_ROOT_USER (≥ 3 chars) and MINIO_ROOT_PASSWORD (≥ 8 chars)")
		}
		for _, n := range nodes {
			if n.flag("storage") == "" {
				continue
			}
			if env(n.svc, "AWS_ACCESS_KEY_ID") != user || env(n.svc, "AWS_SECRET_ACCESS_KEY") != pass {
				problems = append(problems, fmt.Sprintf("%s: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not MinIO's root credentials", n.svc.Name))
			}
		}
		for _, s := range services {
			text := strings.Join(s.Command, " ")
			for _, v := range []string{"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} {
				if strings.Contains(text, "$"+v) && env(s, v) == "" {
					problems = append(problems, fmt.Sprintf("%s uses $%s but does not have it in its environment", s.Name, v))
				}
			}
		}
	}
	r.check(name("credentials: the nodes' AWS_* keys are MinIO's root user (from dev.env)"), problems)
}

// checkListeners: listeners bind every interface (others connect over the compose network);
// brokers advertise a published host port; health probes hit the HTTP listener; data dirs are
// the image's volume, backed by one named volume per node.
func checkListeners(r *report, p *types.Project, nodes, brokers []node, image *imageInfo, name func(string) string) {
	var problems []string
	for _, n := range nodes {
		for _, f := range []string{"kafka-listen", "controller-listen", "http-listen"} {
			addr, ok := n.flags[f]
			if !ok {
				continue
			}
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: --%s=%q is not HOST:PORT", n.svc.Name, f, addr))
			} else if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
				problems = append(problems, fmt.Sprintf("%s: --%s=%s is loopback: unreachable from other containers and published ports", n.svc.Name, f, addr))
			}
		}
	}
	r.check(name("listeners bind beyond loopback"), problems)

	problems = nil
	advertised := map[string]string{}
	for _, b := range brokers {
		adv := b.flag("kafka-advertise")
		host, port, err := net.SplitHostPort(adv)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: --kafka-advertise=%q is not HOST:PORT", b.svc.Name, adv))
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			problems = append(problems, fmt.Sprintf("%s advertises the wildcard %s", b.svc.Name, adv))
		}
		if other, dup := advertised[adv]; dup {
			problems = append(problems, fmt.Sprintf("%s and %s both advertise %s", other, b.svc.Name, adv))
		}
		advertised[adv] = b.svc.Name
		_, listenPort, _ := net.SplitHostPort(b.flag("kafka-listen"))
		pc := publishedAs(b.svc, port)
		switch {
		case pc == nil:
			problems = append(problems, fmt.Sprintf("%s advertises port %s, which it does not publish", b.svc.Name, port))
		case strconv.Itoa(int(pc.Target)) != listenPort:
			problems = append(problems, fmt.Sprintf("%s publishes %s to container port %d, but Kafka listens on %s", b.svc.Name, port, pc.Target, listenPort))
		case !sameHost(pc.HostIP, host):
			problems = append(problems, fmt.Sprintf("%s publishes %s on %s but advertises %s", b.svc.Name, port, hostIP(*pc), host))
		}
	}
	r.check(name(fmt.Sprintf("brokers advertise published host ports (%s)", strings.Join(sortedKeys(advertised), ", "))), problems)

	problems = nil
	for _, n := range nodes {
		_, httpPort, err := net.SplitHostPort(n.flag("http-listen"))
		hc := n.svc.HealthCheck
		if err != nil || hc == nil || len(hc.Test) < 2 {
			problems = append(problems, fmt.Sprintf("%s: no probe of its --http-listen", n.svc.Name))
			continue
		}
		if image != nil && image.probe != "" && hc.Test[1] != image.probe {
			problems = append(problems, fmt.Sprintf("%s: healthcheck runs %q, the image's probe is %q", n.svc.Name, hc.Test[1], image.probe))
		}
		target := n.flag("http-listen")
		if len(hc.Test) > 2 {
			target = hc.Test[2]
		}
		if _, port, err := net.SplitHostPort(target); err != nil || port != httpPort {
			problems = append(problems, fmt.Sprintf("%s: healthcheck probes %q, HTTP listens on port %s", n.svc.Name, target, httpPort))
		}
	}
	r.check(name("healthchecks probe each node's HTTP listener with the image's probe"), problems)

	problems = nil
	volumes := map[string]string{}
	for _, n := range nodes {
		dir := n.flag("data-dir")
		if image != nil && dir != image.dataDir {
			problems = append(problems, fmt.Sprintf("%s: --data-dir=%s is not the image's volume %s", n.svc.Name, dir, image.dataDir))
		}
		var vol string
		for _, v := range n.svc.Volumes {
			if v.Target == dir && v.Type == types.VolumeTypeVolume && v.Source != "" {
				vol = v.Source
			}
		}
		if vol == "" {
			if n.role == "controller" {
				problems = append(problems, fmt.Sprintf("%s: no named volume at %s (the Raft log would not survive a re-create)", n.svc.Name, dir))
			}
			continue
		}
		if other, dup := volumes[vol]; dup {
			problems = append(problems, fmt.Sprintf("%s and %s share volume %s", other, n.svc.Name, vol))
		}
		volumes[vol] = n.svc.Name
	}
	r.check(name("each node's data directory is its own named volume"), problems)
}

// reaches checks that addr (host:port) names service n and the port of its flag listener.
func reaches(p *types.Project, n node, addr, listenFlag string) []string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return []string{fmt.Sprintf("voter address %q is not HOST:PORT", addr)}
	}
	var problems []string
	if !namesService(n.svc, host) {
		problems = append(problems, fmt.Sprintf("voter address %s does not name service %s", addr, n.svc.Name))
	}
	if _, lp, err := net.SplitHostPort(n.flag(listenFlag)); err != nil || lp != port {
		problems = append(problems, fmt.Sprintf("voter address %s: %s listens on %q", addr, n.svc.Name, n.flag(listenFlag)))
	}
	return problems
}

// namesService: host resolves to the service on the compose network (service name, hostname
// or a network alias).
func namesService(s types.ServiceConfig, host string) bool {
	if host == s.Name || host == s.Hostname || host == s.ContainerName {
		return true
	}
	for _, nw := range s.Networks {
		if nw != nil && slices.Contains(nw.Aliases, host) {
			return true
		}
	}
	return false
}

// endpointReaches: raw is http://<service>:<port> with port the one MinIO serves its API on.
func endpointReaches(raw string, minio types.ServiceConfig) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" {
		return false
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	api := "9000" // minio server's default --address
	for i, a := range minio.Command {
		if a == "--address" && i+1 < len(minio.Command) {
			_, api, _ = net.SplitHostPort(minio.Command[i+1])
		}
	}
	return namesService(minio, u.Hostname()) && port == api
}

// publishedAs returns the port mapping whose host side is port, or nil.
func publishedAs(s types.ServiceConfig, port string) *types.ServicePortConfig {
	for i, pc := range s.Ports {
		if pc.Published == port {
			return &s.Ports[i]
		}
	}
	return nil
}

// sameHost: a client connecting to advertised host reaches a port published on hostIP.
func sameHost(hostIP, advertised string) bool {
	switch hostIP {
	case "", "0.0.0.0", "::":
		return true
	case "127.0.0.1":
		return advertised == "127.0.0.1" || advertised == "localhost"
	}
	return hostIP == advertised
}

func parseVoters(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, entry := range splitList(s) {
		id, addr, ok := strings.Cut(entry, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("%q is not ID=HOST:PORT", entry)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("voter %s listed twice", id)
		}
		out[id] = addr
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty")
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func byRole(nodes []node, role string) []node {
	var out []node
	for _, n := range nodes {
		if n.role == role {
			out = append(out, n)
		}
	}
	return out
}

func env(s types.ServiceConfig, key string) string {
	if v, ok := s.Environment[key]; ok && v != nil {
		return *v
	}
	return ""
}
