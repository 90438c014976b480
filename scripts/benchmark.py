"""Measures the codebase's speed; prints a table and writes JSON.

  # all CPU parts on 8 simulated devices (part 4 needs several devices)
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python scripts/benchmark.py \\
      --config configs/small_scale.py:bn_x30,fashion_mnist --output results/benchmark_cpu.json
  # one GPU: bare step, input pipeline and FLOPs of the full network
  python scripts/benchmark.py --config configs/bn_x30.py --parts 1,3,6 --batch_size 128
  # the whole loop against the bare step, without TensorFlow, and a profile of the step
  python scripts/benchmark.py --config configs/bn_x30.py --config.data.source=synthetic \
      --parts 1,2,7 --batch_size 128 --profile_dir results/gpu/profile

Parts: 1 bare train step, 2 full training loop, 3 input pipeline vs bare
tf.data, 4 synced vs per-device BN, 5 population-statistics vs eval pass,
6 FLOPs per image (and MFU on an accelerator), 7 a jax.profiler trace of the
train step summarized by category (bn_repro/benchmarks/profile.py), 8 which
pre-resized copy to store: size, host cost and fidelity of each
(bn_repro/benchmarks/stored_copies.py; not in the default parts).
"""

import os
import tempfile

from absl import flags
from ml_collections import config_flags

from bn_repro import cli

config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
flags.DEFINE_list('parts', '1,2,3,4,5,6', 'Which measurements to run.')
flags.DEFINE_integer('batch_size', None, 'Per-device batch (default: the config\'s global / devices).')
flags.DEFINE_integer('steps', 20, 'Steps (or batches) per timed repeat.')
flags.DEFINE_integer('repeats', 5, 'Timed repeats of each measurement.')
flags.DEFINE_integer('loop_steps', 300, 'Steps of the full-loop run (part 2).')
flags.DEFINE_string('loop_checkpoint_every', '100 steps',
                    'Checkpoint cadence of the full-loop run (part 2); empty: the config\'s.')
flags.DEFINE_string('profile_dir', None, 'Where part 7 writes its trace and summary '
                    '(default: profile/ beside --output, else a temporary directory).')
flags.DEFINE_integer('profile_steps', 5, 'Train steps traced by part 7.')
flags.DEFINE_integer('pipeline_batch', 128, 'Batch of the input-pipeline comparison (part 3).')
flags.DEFINE_enum('pipeline_side', '320', ['256', '288', '320', '352'],
                  'Shorter side of the pre-resized copy that part 3 measures.')
flags.DEFINE_list('stored_copies', ['320:90', '320:85', '320:80', '320:75', '288:90', '256:90'],
                  'SIDE:QUALITY of each pre-resized copy that part 8 compares with the originals.')
flags.DEFINE_string('output', None, 'JSON file for the results.')
flags.mark_flags_as_required(['config'])
cli.answer_help()   # before the imports below, which load TensorFlow and JAX (seconds)

from bn_repro.benchmarks import steps, timing  # noqa: E402
from bn_repro.parallel import device_map  # noqa: E402
from bn_repro.workdir import write_json_on_process_0  # noqa: E402


def main(argv):
  del argv
  f = flags.FLAGS
  config = f.config
  if f.batch_size:
    config.global_batch_size = f.batch_size * device_map.device_count()
  batch = config.global_batch_size
  device_map.per_device_batch('global_batch_size', batch)
  parts = {int(p) for p in f.parts}
  if 8 in parts:   # a bad --stored_copies fails before the other parts run
    from bn_repro.benchmarks import stored_copies  # noqa: PLC0415 (TensorFlow only for part 8)
    copies = stored_copies.parse_copies(f.stored_copies)
  results = {'config': config.name, 'global_batch': batch, 'dtype': config.model.dtype,
             'environment': timing.environment()}
  print(f'{config.name}: global batch {batch} on {device_map.device_count()} '
        f'{results["environment"]["device_kind"]} devices, {config.model.dtype}')

  if 1 in parts:
    r = results['1_bare_step'] = steps.bare_step(config, batch, f.steps, f.repeats)
    print(f'1 bare train step: {r["images"]["median_per_s"]:.1f} images/s '
          f'({r["images"]["min_per_s"]:.1f}-{r["images"]["max_per_s"]:.1f}; by repeat '
          f'{r["images_per_s_by_repeat"]}), compile {r["compile_seconds"]} s')
  if 2 in parts:
    from bn_repro.benchmarks import loop  # TensorFlow only for the parts that read data
    r = results['2_full_loop'] = loop.full_loop(config, f.loop_steps, f.loop_checkpoint_every)
    line = (f'2 full training loop ({r["source"]} input, checkpoints every '
            f'{r["checkpoint_every"]}): {r["images"]["median_per_s"]:.1f} images/s')
    if '1_bare_step' in results:
      r['ratio_to_bare_step'] = (r['images']['median_per_s'] /
                                 results['1_bare_step']['images']['median_per_s'])
      line += f', {r["ratio_to_bare_step"]:.3f}x the bare step'
    print(line)
  if 3 in parts:
    from bn_repro.benchmarks import input_pipeline  # TensorFlow only for the parts that read data
    r = results['3_input_pipeline'] = input_pipeline.compare(
        config, batch=f.pipeline_batch, num_batches=f.steps, repeats=f.repeats,
        side=int(f.pipeline_side))
    print(f'3 input pipeline, photo-like JPEGs ({r["jpeg_sizes"]}), photometric strength '
          f'{r["photometric_strength"]:g}:')
    for name, v in r.items():
      if isinstance(v, dict) and 'images_per_s' in v:
        print(f'  {name}: {v["images_per_s"]:.0f} images/s ({v["min"]:.0f}-{v["max"]:.0f}), '
              f'{v["cpu_ms_per_image"]:.2f} CPU-ms/image = {v["images_per_s_per_core"]:.0f} '
              'images/s per core')
  if 4 in parts:
    r = results['4_synced_bn'] = steps.synced_vs_per_device_bn(config, batch, f.steps, f.repeats)
    print(f'4 synced / per-device BN step time on {r["devices"]} devices: '
          f'{r["synced_over_per_device"]:.3f} (ms/step synced {r["synced_step_ms"]}, '
          f'per-device {r["per_device_step_ms"]})')
  if 5 in parts:
    r = results['5_population_pass'] = steps.population_vs_eval(
        config, batch, f.steps, f.repeats)
    print(f'5 population-statistics pass / eval pass: {r["population_over_eval"]:.3f}')
  if 6 in parts:
    rate = results.get('1_bare_step', {}).get('images', {}).get('median_per_s')
    r = results['6_flops'] = steps.flops(config, train_images_per_s=rate)
    line = f'6 forward FLOPs per image: {r["forward_gflops_per_image"]:.3f} G ({r["source"]})'
    if 'mfu' in r:
      line += f'; model-FLOPs utilization {100 * r["mfu"]:.1f}% of {r["peak_flops"] / 1e12:.0f} TFLOP/s'
    print(line)

  if 7 in parts:
    from bn_repro.benchmarks import profile
    log_dir = f.profile_dir or (os.path.join(os.path.dirname(f.output) or '.', 'profile')
                                if f.output else tempfile.mkdtemp(prefix='bn_repro_profile_'))
    r = results['7_profile'] = profile.profile_train_step(config, batch, f.profile_steps, log_dir)
    shares = sorted(r['categories'].items(), key=lambda kv: -kv[1]['share'])[:5]
    print(f'7 profile of {f.profile_steps} train steps: '
          f'{1000 * r["traced_op_seconds_per_step"]:.2f} ms of device ops per step; '
          + ', '.join(f'{k} {100 * v["share"]:.1f}%' for k, v in shares)
          + f'; table in {log_dir}/profile_summary.txt')

  if 8 in parts:
    r = results['8_stored_copies'] = stored_copies.compare(
        config.data, copies, batch=f.pipeline_batch,
        num_batches=f.steps, repeats=f.repeats)
    print('8 stored copies (train crops, augmentation on the device; fidelity against the '
          'uncompressed photographs):')
    for name, v in r.items():
      small = v['fidelity_db_small_crops']
      print(f'  {name}: {v["jpeg_kb"]:.0f} KB, {v["cpu_ms_per_image"]:.2f} CPU-ms/image = '
            f'{v["images_per_s_per_core"]:.0f} images/s per core, fidelity '
            f'{v["fidelity_db"]:.2f} dB' + (f' ({small:.2f} dB on crops under 30% of the area)'
                                           if small is not None else ''))

  if f.output:
    write_json_on_process_0(f.output, results)


if __name__ == '__main__':
  cli.start(main)
