"""Phase 4 — ML/GPU: GPU nodes, NVIDIA device plugin, TorchServe, model archives, intent-classifier switch, and the
inference latency gate (the migration guide's weeks 7–8).

Serving is chosen per environment with the ``serving`` setting (``"torchserve"`` — default — or ``"sagemaker"``),
set in every phase-4 step table (``[steps.<id>] serving``). With ``sagemaker`` the GPU-node, device-plugin and
TorchServe steps are skipped with that reason and ``models`` creates a SageMaker model, endpoint config and endpoint.

Kubernetes steps are skipped — with the reason and the command to provide a cluster — when no Kubernetes API is
reachable (the local sandbox has none; it is never simulated inside the product). Steps talk to adapters only:
``kube``, ``manifests``, ``torchserve``, ``aws_ml`` and ``http``.
"""

NUMBER = 4
TITLE = "ml"
# step modules in definition order (the graph orders by phase, then depends_on, then this order)
ORDER = (
    "gpu_nodes",
    "nvidia_plugin",
    "torchserve",
    "models",
    "ml_config",
    "ml_perf",
)
