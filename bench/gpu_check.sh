#!/usr/bin/env bash
# GPU check for vexport: which hardware encoders work on this machine, and what NVDEC decoding and
# scale_cuda buy a CPU (libx264) encode, on 2 cores and on all of them. Results: docs/hardware.md.
#   FFMPEG=/path/to/ffmpeg bash bench/gpu_check.sh      (default: the imageio-ffmpeg binary vexport uses)
# It needs an FFmpeg built with CUDA (imageio-ffmpeg 0.8.1's is), an NVIDIA GPU, and taskset.
set -u
T=${TMPDIR:-/tmp}/vexport-gpu; mkdir -p $T
F=${FFMPEG:-$(python3 -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())")}
echo "== machine"; nvidia-smi -L; nproc; $F -version | head -1
nvidia-smi --query-gpu=name,driver_version,encoder.stats.sessionCount --format=csv
echo "== encoder trials (vexport's try_encoder argv)"
for e in h264_nvenc hevc_nvenc av1_nvenc h264_qsv hevc_qsv av1_qsv h264_vulkan; do
  $F -hide_banner -nostdin -loglevel error -f lavfi -i testsrc2=s=256x144:r=25:d=0.2 -frames:v 4 -pix_fmt yuv420p -c:v $e -f null - 2>$T/err
  echo "$e exit=$? $(grep -v '^\s*$' $T/err | head -2 | tr '\n' ' ')"
done
echo "== cuda device and filters"
$F -hide_banner -loglevel error -init_hw_device cuda=gpu -f lavfi -i testsrc2=s=256x144:d=0.2 -vf hwupload_cuda,scale_cuda=128:72,hwdownload,format=yuv420p -f null - && echo "cuda hwupload+scale_cuda ok"
$F -hide_banner -filters 2>/dev/null | grep -i vmaf
echo "== source: 20 s 1080p30 H.264 with texture and grain"
$F -hide_banner -loglevel error -f lavfi -i "testsrc2=s=1920x1080:r=30:d=20,noise=alls=6:allf=t" -f lavfi -i "mandelbrot=s=1920x1080:r=30" -filter_complex "[0][1]blend=all_mode=average" -t 20 -c:v libx264 -preset veryfast -crf 18 -g 60 -pix_fmt yuv420p -y $T/src.mp4
ls -la $T/src.mp4
TIMEFORMAT='%R wall %U user %S sys'
run() { local name=$1; shift; for i in 1 2; do echo -n "$name run$i: "; { time { "$@" >/dev/null 2>$T/err; echo $? >$T/rc; }; } 2>&1 | tr '\n' ' '; echo " exit=$(cat $T/rc)"; [ "$(cat $T/rc)" = 0 ] || tail -2 $T/err; done; }
for cores in "0-1" "0-15"; do
  echo "== cores $cores: decode only"
  run "cpu-decode" taskset -c $cores $F -hide_banner -nostdin -i $T/src.mp4 -f null -
  run "nvdec-decode" taskset -c $cores $F -hide_banner -nostdin -hwaccel cuda -hwaccel_output_format cuda -i $T/src.mp4 -f null -
  echo "== cores $cores: 1080p -> 720p libx264 medium crf 23"
  run "cpu-scale+x264" taskset -c $cores $F -hide_banner -nostdin -i $T/src.mp4 -vf scale=1280:720:flags=bicubic -c:v libx264 -preset medium -crf 23 -an -y $T/cpu.mp4
  run "nvdec+scale_cuda+x264" taskset -c $cores $F -hide_banner -nostdin -hwaccel cuda -hwaccel_output_format cuda -i $T/src.mp4 -vf scale_cuda=1280:720:interp_algo=bicubic,hwdownload,format=nv12 -c:v libx264 -preset medium -crf 23 -an -y $T/gpu.mp4
  echo "== cores $cores: 1080p -> 1080p libx264 medium crf 23"
  run "cpu-x264-1080" taskset -c $cores $F -hide_banner -nostdin -i $T/src.mp4 -c:v libx264 -preset medium -crf 23 -an -y $T/cpu1080.mp4
  run "nvdec+x264-1080" taskset -c $cores $F -hide_banner -nostdin -hwaccel cuda -i $T/src.mp4 -c:v libx264 -preset medium -crf 23 -an -y $T/gpu1080.mp4
done
echo "== outputs"; ls -la $T/*.mp4
for f in cpu gpu; do $F -hide_banner -nostdin -i $T/$f.mp4 -map 0:v -f null - 2>&1 | grep -E 'frame=' | tail -1; done
echo "== PSNR of the GPU-scaled output against the CPU-scaled one"
$F -hide_banner -nostdin -i $T/gpu.mp4 -i $T/cpu.mp4 -lavfi psnr -f null - 2>&1 | grep -i 'psnr' | tail -1
