// A validating admission webhook that allows everything and does nothing else, in Go's net/http
// (what the API server itself is written in). The benchmark registers it next to Kiln's webhook,
// for the same requests: what the API server measures for it is the floor of any webhook's latency
// on the machine. Benchmarks only; see hack/noop-webhook/build.sh.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
)

type review struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Request    *struct {
		UID string `json:"uid"`
	} `json:"request,omitempty"`
	Response *response `json:"response,omitempty"`
}

type response struct {
	UID     string `json:"uid"`
	Allowed bool   `json:"allowed"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9444", "listen address")
	cert := flag.String("cert", "", "PEM certificate")
	key := flag.String("key", "", "PEM private key")
	flag.Parse()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var in review
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Request == nil {
			http.Error(w, "expected an AdmissionReview", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(review{APIVersion: in.APIVersion, Kind: in.Kind,
			Response: &response{UID: in.Request.UID, Allowed: true}})
	})
	log.Fatal(http.ListenAndServeTLS(*addr, *cert, *key, nil))
}
