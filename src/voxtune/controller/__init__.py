"""What runs in the controller pod: the FineTuneRun CRD (crd), pure Job builders (jobs), pure
reconcile decisions (reconcile), the API client wrapper (kubeapi) and the watch loop
(operator). The user-side Kubernetes backend is voxtune.executors.kubernetes."""
