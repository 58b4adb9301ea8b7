"""DeepPatch: blame filters (assess), patch units (correct), the runtime switch (evaluate)."""
