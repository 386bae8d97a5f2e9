// The "core API" stand-in that k8s.io/apiextensions-apiserver needs when it runs without a
// kube-apiserver (scripts/kube-apiserver.sh): it delegates authentication and authorisation
// to the core server and runs informers against it. This answers every TokenReview as
// authenticated, every SubjectAccessReview as allowed, every watch with an open, silent
// stream, /openapi/* with an empty document and every other GET with an empty list. Test
// infrastructure only; standard library only, built inside the kube-apiserver Debian root.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"strings"
)

func writeJSON(w http.ResponseWriter, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// apiVersionOf reads the request body's apiVersion (v1 or v1beta1 reviews), with a default.
func apiVersionOf(r *http.Request, fallback string) string {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var obj struct {
		APIVersion string `json:"apiVersion"`
	}
	if json.Unmarshal(body, &obj) == nil && obj.APIVersion != "" {
		return obj.APIVersion
	}
	return fallback
}

// listKinds names the list kind of the resources the server's informers read: a typed
// client refuses a list whose kind is not registered for the group version it asked.
var listKinds = map[string]string{
	"namespaces":                        "NamespaceList",
	"services":                          "ServiceList",
	"endpoints":                         "EndpointsList",
	"serviceaccounts":                   "ServiceAccountList",
	"secrets":                           "SecretList",
	"configmaps":                        "ConfigMapList",
	"pods":                              "PodList",
	"nodes":                             "NodeList",
	"mutatingwebhookconfigurations":     "MutatingWebhookConfigurationList",
	"validatingwebhookconfigurations":   "ValidatingWebhookConfigurationList",
	"validatingadmissionpolicies":       "ValidatingAdmissionPolicyList",
	"validatingadmissionpolicybindings": "ValidatingAdmissionPolicyBindingList",
	"mutatingadmissionpolicies":         "MutatingAdmissionPolicyList",
	"mutatingadmissionpolicybindings":   "MutatingAdmissionPolicyBindingList",
	"flowschemas":                       "FlowSchemaList",
	"prioritylevelconfigurations":       "PriorityLevelConfigurationList",
	"customresourcedefinitions":         "CustomResourceDefinitionList",
	"storageversions":                   "StorageVersionList",
	"leases":                            "LeaseList",
}

// listOf is an empty list of the resource at path (/api/v1/... or /apis/G/V/...).
func listOf(path string) map[string]interface{} {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	apiVersion, kind := "v1", "List"
	var rest []string
	if len(parts) >= 2 && parts[0] == "api" {
		apiVersion, rest = parts[1], parts[2:]
	} else if len(parts) >= 3 && parts[0] == "apis" {
		apiVersion, rest = parts[1]+"/"+parts[2], parts[3:]
	}
	if len(rest) >= 3 && rest[0] == "namespaces" {
		rest = rest[2:]
	}
	if len(rest) >= 1 {
		if k, ok := listKinds[rest[0]]; ok {
			kind = k
		}
	}
	return map[string]interface{}{
		"apiVersion": apiVersion,
		"kind":       kind,
		"metadata":   map[string]interface{}{"resourceVersion": "1"},
		"items":      []interface{}{},
	}
}

func handler(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if r.URL.Query().Get("watch") == "" {
		log.Printf("%s %s", r.Method, r.URL.RequestURI())
	}
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/tokenreviews"):
		writeJSON(w, map[string]interface{}{
			"apiVersion": apiVersionOf(r, "authentication.k8s.io/v1"),
			"kind":       "TokenReview",
			"status": map[string]interface{}{
				"authenticated": true,
				"user": map[string]interface{}{
					"username": "drover-test",
					"groups":   []string{"system:masters", "system:authenticated"},
				},
			},
		})
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/subjectaccessreviews"):
		writeJSON(w, map[string]interface{}{
			"apiVersion": apiVersionOf(r, "authorization.k8s.io/v1"),
			"kind":       "SubjectAccessReview",
			"status":     map[string]interface{}{"allowed": true},
		})
	case r.Method == http.MethodGet && (r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1"):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		<-r.Context().Done()
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/openapi/"):
		writeJSON(w, map[string]interface{}{"paths": map[string]interface{}{}})
	case r.Method == http.MethodGet:
		writeJSON(w, listOf(path))
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"MethodNotAllowed","code":405}`))
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:6972", "address to serve on")
	flag.Parse()
	log.Printf("core API stand-in on http://%s", *listen)
	log.Fatal(http.ListenAndServe(*listen, http.HandlerFunc(handler)))
}
