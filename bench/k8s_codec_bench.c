/* k8s_codec_bench.c: throughput of the Kubernetes codec on generated Pods.
 *
 * Builds N realistic Pods (labels, annotations, 1-3 containers with env, ports,
 * resources, probes and mounts, volumes, tolerations, a status with conditions
 * and container states), stores each as protobuf with k8s_encode, then times:
 *   decode  protobuf -> YAML     (what `cat` on the mount does)
 *   decode  protobuf -> JSON
 *   encode  YAML -> protobuf against the original (what a save does; the text
 *           is unedited, so this is the lossless merge path)
 *   encode  YAML -> protobuf as a new object
 * MB/s is counted on the protobuf bytes per second of CPU time (single thread).
 * Usage: k8s_codec_bench [-n PODS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "k8s/k8s.h"

/* CPU time of this process: on a shared machine wall time mostly measures the
 * neighbours */
static const char *const images[] = {"nginx:1.25.3",  "redis:7.2",
				     "postgres:16.1", "registry.k8s.io/pause:3.9",
				     "busybox:1.36",  "ghcr.io/example/api-server:v2.14.7"};

static char *gen_pod(unsigned i)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	unsigned nc = 1 + i % 3;
	const char *ns = i % 5 ? "default" : "kube-system";

	fprintf(f,
		"apiVersion: v1\nkind: Pod\nmetadata:\n"
		"  annotations:\n"
		"    kubectl.kubernetes.io/restartedAt: \"2024-03-%02uT10:%02u:00Z\"\n"
		"    prometheus.io/scrape: \"true\"\n"
		"  creationTimestamp: \"2024-03-%02uT09:%02u:%02uZ\"\n"
		"  generateName: web-%u-\n"
		"  labels:\n"
		"    app: web-%u\n"
		"    pod-template-hash: \"%08x\"\n"
		"    tier: %s\n"
		"  name: web-%u-%05u\n"
		"  namespace: %s\n"
		"  ownerReferences:\n"
		"  - apiVersion: apps/v1\n"
		"    blockOwnerDeletion: true\n"
		"    controller: true\n"
		"    kind: ReplicaSet\n"
		"    name: web-%u-%08x\n"
		"    uid: %08x-1111-2222-3333-%012x\n"
		"  uid: %08x-aaaa-bbbb-cccc-%012x\n"
		"spec:\n"
		"  containers:\n",
		1 + i % 28, i % 60, 1 + i % 28, i % 24, i % 60, i % 97, i % 97, i * 2654435761u,
		i % 2 ? "frontend" : "backend", i % 97, i, ns, i % 97, i * 40503u, i, i * 7u, i,
		i * 13u);
	for (unsigned c = 0; c < nc; c++) {
		fprintf(f,
			"  - env:\n"
			"    - name: LOG_LEVEL\n      value: info\n"
			"    - name: POD_NAME\n      valueFrom:\n        fieldRef:\n"
			"          apiVersion: v1\n          fieldPath: metadata.name\n"
			"    - name: REPLICA\n      value: \"%u\"\n"
			"    image: %s\n"
			"    imagePullPolicy: IfNotPresent\n"
			"    livenessProbe:\n"
			"      failureThreshold: 3\n"
			"      httpGet:\n        path: /healthz\n        port: %s\n        scheme: "
			"HTTP\n"
			"      periodSeconds: 10\n      successThreshold: 1\n      timeoutSeconds: "
			"1\n"
			"    name: c%u\n"
			"    ports:\n"
			"    - containerPort: %u\n      name: http\n      protocol: TCP\n"
			"    resources:\n"
			"      limits:\n        cpu: \"%u\"\n        memory: %uMi\n"
			"      requests:\n        cpu: %um\n        memory: %uMi\n"
			"    terminationMessagePath: /dev/termination-log\n"
			"    terminationMessagePolicy: File\n"
			"    volumeMounts:\n"
			"    - mountPath: /etc/config\n      name: config\n      readOnly: true\n"
			"    - mountPath: /var/run/secrets/kubernetes.io/serviceaccount\n"
			"      name: kube-api-access-%05u\n      readOnly: true\n",
			i, images[(i + c) % 6], c % 2 ? "http" : "8080", c, 8080 + c, 1 + c,
			128 << (i % 3), 100 + 50 * c, 64 << (i % 3), i);
	}
	fprintf(f,
		"  dnsPolicy: ClusterFirst\n"
		"  enableServiceLinks: true\n"
		"  nodeName: node-%u.example.internal\n"
		"  preemptionPolicy: PreemptLowerPriority\n"
		"  priority: 0\n"
		"  restartPolicy: Always\n"
		"  schedulerName: default-scheduler\n"
		"  securityContext: {}\n"
		"  serviceAccount: default\n"
		"  serviceAccountName: default\n"
		"  terminationGracePeriodSeconds: 30\n"
		"  tolerations:\n"
		"  - effect: NoExecute\n    key: node.kubernetes.io/not-ready\n"
		"    operator: Exists\n    tolerationSeconds: 300\n"
		"  - effect: NoExecute\n    key: node.kubernetes.io/unreachable\n"
		"    operator: Exists\n    tolerationSeconds: 300\n"
		"  volumes:\n"
		"  - configMap:\n      defaultMode: 420\n      name: web-config\n    name: config\n"
		"  - name: kube-api-access-%05u\n"
		"    projected:\n      defaultMode: 420\n      sources:\n"
		"      - serviceAccountToken:\n          expirationSeconds: 3607\n"
		"          path: token\n"
		"status:\n"
		"  conditions:\n"
		"  - lastProbeTime: null\n    lastTransitionTime: \"2024-03-01T09:00:%02uZ\"\n"
		"    status: \"True\"\n    type: Initialized\n"
		"  - lastProbeTime: null\n    lastTransitionTime: \"2024-03-01T09:01:%02uZ\"\n"
		"    status: \"True\"\n    type: Ready\n"
		"  containerStatuses:\n",
		i % 50, i, i % 60, i % 60);
	for (unsigned c = 0; c < nc; c++)
		fprintf(f,
			"  - containerID: containerd://%016x%016x\n"
			"    image: %s\n"
			"    imageID: sha256:%016x%016x\n"
			"    lastState: {}\n"
			"    name: c%u\n"
			"    ready: true\n"
			"    restartCount: %u\n"
			"    started: true\n"
			"    state:\n      running:\n        startedAt: "
			"\"2024-03-01T09:00:%02uZ\"\n",
			i, c, images[(i + c) % 6], i * 31u, c, c, i % 4, i % 60);
	fprintf(f,
		"  hostIP: 10.0.%u.%u\n"
		"  phase: Running\n"
		"  podIP: 10.244.%u.%u\n"
		"  podIPs:\n  - ip: 10.244.%u.%u\n"
		"  qosClass: Burstable\n"
		"  startTime: \"2024-03-01T09:00:00Z\"\n",
		i % 50, 1 + i % 200, i % 250, 1 + i % 250, i % 250, 1 + i % 250);
	fclose(f);
	return buf;
}

int main(int argc, char **argv)
{
	unsigned n = 10000;
	int c;

	while ((c = getopt(argc, argv, "n:")) != -1) {
		if (c == 'n')
			n = (unsigned)strtoul(optarg, NULL, 10);
		else {
			fprintf(stderr, "usage: %s [-n PODS]\n", argv[0]);
			return 2;
		}
	}
	char **text = calloc(n, sizeof(*text));
	void **pb = calloc(n, sizeof(*pb));
	size_t *pblen = calloc(n, sizeof(*pblen));
	char **yaml = calloc(n, sizeof(*yaml));
	size_t *ylen = calloc(n, sizeof(*ylen));
	size_t pb_total = 0, yaml_total = 0, text_total = 0;
	double t0, t;
	char *err = NULL;

	if (!text || !pb || !pblen || !yaml || !ylen)
		return 1;
	for (unsigned i = 0; i < n; i++) {
		text[i] = gen_pod(i);
		text_total += strlen(text[i]);
	}

	t0 = bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
	for (unsigned i = 0; i < n; i++) {
		if (k8s_encode(NULL, 0, text[i], strlen(text[i]), NULL, NULL, 0, &pb[i], &pblen[i],
			       &err)) {
			fprintf(stderr, "pod %u: %s\n", i, err ? err : "encode failed");
			return 1;
		}
		pb_total += pblen[i];
	}
	t = bench_seconds(CLOCK_PROCESS_CPUTIME_ID) - t0;
	printf("%u pods, %.1f MB protobuf (avg %zu B), %.1f MB YAML input\n", n, pb_total / 1e6,
	       pb_total / n, text_total / 1e6);
	printf("encode new   YAML -> protobuf:  %7.1f MB/s  %8.0f objects/s\n", pb_total / 1e6 / t,
	       n / t);

	t0 = bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
	for (unsigned i = 0; i < n; i++) {
		if (k8s_decode(pb[i], pblen[i], K8S_FMT_YAML, 0, &yaml[i], &ylen[i], &err)) {
			fprintf(stderr, "decode %u: %s\n", i, err ? err : "failed");
			return 1;
		}
		yaml_total += ylen[i];
	}
	t = bench_seconds(CLOCK_PROCESS_CPUTIME_ID) - t0;
	printf("decode       protobuf -> YAML:  %7.1f MB/s  %8.0f objects/s\n", pb_total / 1e6 / t,
	       n / t);

	t0 = bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
	for (unsigned i = 0; i < n; i++) {
		char *j;
		size_t jl;
		if (k8s_decode(pb[i], pblen[i], K8S_FMT_JSON, 0, &j, &jl, &err))
			return 1;
		free(j);
	}
	t = bench_seconds(CLOCK_PROCESS_CPUTIME_ID) - t0;
	printf("decode       protobuf -> JSON:  %7.1f MB/s  %8.0f objects/s\n", pb_total / 1e6 / t,
	       n / t);

	t0 = bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
	size_t same = 0;
	for (unsigned i = 0; i < n; i++) {
		void *o;
		size_t ol;
		if (k8s_encode(pb[i], pblen[i], yaml[i], ylen[i], NULL, NULL, 0, &o, &ol, &err)) {
			fprintf(stderr, "re-encode %u: %s\n", i, err ? err : "failed");
			return 1;
		}
		same += ol == pblen[i] && !memcmp(o, pb[i], ol);
		free(o);
	}
	t = bench_seconds(CLOCK_PROCESS_CPUTIME_ID) - t0;
	printf("encode edit  YAML -> protobuf:  %7.1f MB/s  %8.0f objects/s  (%zu/%u byte-exact)\n",
	       pb_total / 1e6 / t, n / t, same, n);

	for (unsigned i = 0; i < n; i++) {
		free(text[i]);
		free(pb[i]);
		free(yaml[i]);
	}
	free(text);
	free(pb);
	free(pblen);
	free(yaml);
	free(ylen);
	return same == n ? 0 : 1;
}
