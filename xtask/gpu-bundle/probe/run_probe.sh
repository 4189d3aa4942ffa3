#!/usr/bin/env bash
# Builds cusparselt_probe.cu with the GPU machine's nvcc and runs each case in its own process
# (a fault poisons the context). Usage there: ./run_probe.sh (prints each call's status).
set -u
H="$(cd "$(dirname "$0")" && pwd)"
LT="$(python3 -c 'import nvidia.cusparselt as m; print(m.__path__[0])')"
export LD_LIBRARY_PATH="$LT/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
SO="$(ls "$LT"/lib/libcusparseLt.so* | head -1)"; echo "lib $SO"
/usr/local/cuda/bin/nvcc -O2 -std=c++17 -arch=sm_90 -I"$LT/include" "$H/cusparselt_probe.cu" -o /tmp/probe -Xlinker "$SO" -Xlinker -rpath -Xlinker "$LT/lib" -lcudart 2>&1 | tail -5
ls "$LT/lib"
for c in "256 128 256 0 0 1 0" "1000 384 512 1 0 1 0" "77 64 1024 1 0 1 0" "256 128 256 0 1 1 0" "1000 384 512 1 1 1 0" "77 64 1024 1 1 1 0" \
         "256 128 256 0 0 0 0" "256 128 256 0 0 1 1" "1000 384 512 0 0 1 0" "32896 1536 512 0 0 1 0"; do
  timeout 60 /tmp/probe $c 2>&1 | tail -30
done
