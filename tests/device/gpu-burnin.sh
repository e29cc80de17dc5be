#!/bin/sh
# The agent's burn-in on a GPU machine, without an appliance, beside a PyTorch reference on
# the same card (the way the fixtures in tests/fixtures/nvidia were measured).
#
#   tests/device/gpu-burnin.sh AGENT PLAN OUTDIR
#
# AGENT is a release provisioner-agent, PLAN a plan as `provisioner burnin plan SKU` prints it
# (shortened as you like), OUTDIR gets: the facts, the report, the agent's log, nvidia-smi
# before and after, and the reference's figures. Judge the report on the appliance with
# `provisioner burnin judge --sku SKU OUTDIR/report.json`. Every step is bounded by timeout.
set -u
agent=$1 plan=$2 out=$3
mkdir -p "$out"
# Where the GPU machines of FACTS.md keep the driver's and CUDA's libraries.
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
query=index,name,pci.bus_id,driver_version,vbios_version,memory.total,power.limit,temperature.gpu,clocks.sm,clocks_event_reasons.active,ecc.errors.uncorrected.volatile.total
timeout 30 nvidia-smi --query-gpu=$query --format=csv >"$out/smi-before.csv" 2>&1
timeout 60 "$agent" --once >"$out/facts.json" 2>"$out/facts.log"
echo "facts: $(tail -1 "$out/facts.log")"
start=$(date +%s)
timeout 330 "$agent" --burn-in "$plan" >"$out/report.json" 2>"$out/agent.log"
echo "agent: exit $? after $(($(date +%s) - start)) s"
timeout 30 nvidia-smi --query-gpu=$query --format=csv >"$out/smi-after.csv" 2>&1
dir=$(dirname "$0")
if command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null; then
    timeout 120 python3 "$dir/../bench/gpu_reference.py" 30 >"$out/reference.json" 2>"$out/reference.log"
    echo "reference: exit $?"
else
    echo "reference: no python3 with torch here; skipped"
fi
cat "$out/smi-before.csv" "$out/smi-after.csv"
grep -v 'memory:\|pattern' "$out/agent.log" | tail -40
cat "$out/reference.json" 2>/dev/null
