# source bench/gpu_env.sh   (on the device machine: wheels in /tmp/site, data slice in /tmp/gsite, model in /tmp/model)
export PYTHONPATH=/tmp/site:/tmp/gsite:$PWD
export METASD_SMOLLM2_GGUF=/tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf
export METASD_CACHE_DIR=/tmp/cache HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
