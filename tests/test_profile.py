"""benchmarks/profile.py: the HLO's instructions sorted into categories, and a real trace
of the tiny BN-Inception's train step summarized with them."""

import pytest

from bn_repro.benchmarks import profile

HLO = '''HloModule jit_step, is_scheduled=true

FileNames
1 "/x/bn_repro/models/batchnorm.py"
2 "/x/site-packages/optax/_src/transform.py"
3 "/x/bn_repro/training/train_step.py"
4 "/x/site-packages/optax/losses/_classification.py"

FileLocations
1 {file_name_id=1 function_name_id=1 line=80 end_line=80 column=1 end_column=2}
2 {file_name_id=2 function_name_id=1 line=10 end_line=10 column=1 end_column=2}
3 {file_name_id=3 function_name_id=1 line=40 end_line=40 column=1 end_column=2}
4 {file_name_id=4 function_name_id=1 line=5 end_line=5 column=1 end_column=2}

StackFrames
1 {file_location_id=3 parent_frame_id=1}
2 {file_location_id=1 parent_frame_id=1}
3 {file_location_id=2 parent_frame_id=1}
4 {file_location_id=4 parent_frame_id=1}

%region_0 (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add.1 = f32[] add(%a, %b)
}

%fused_mean (param_0: f32[8,4]) -> f32[4] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %constant.1 = f32[] constant(0)
  ROOT %reduce.2 = f32[4]{0} reduce(%param_0, %constant.1), dimensions={0}, to_apply=%region_0, metadata={op_name="jit(step)/BatchNorm_0/reduce_sum" stack_frame_id=2}
}

%fused_norm (param_0: f32[8,4], param_1: f32[4]) -> f32[8,4] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %param_1 = f32[4]{0} parameter(1)
  %broadcast.1 = f32[8,4]{1,0} broadcast(%param_1), dimensions={1}
  ROOT %subtract.1 = f32[8,4]{1,0} subtract(%param_0, %broadcast.1), metadata={op_name="jit(step)/BatchNorm_0/sub" stack_frame_id=2}
}

%fused_momentum (param_0: f32[4], param_1: f32[4]) -> f32[4] {
  %param_0 = f32[4]{0} parameter(0)
  %param_1 = f32[4]{0} parameter(1)
  ROOT %add.9 = f32[4]{0} add(%param_0, %param_1), metadata={op_name="jit(step)/add" stack_frame_id=3}
}

%fused_loss (param_0: f32[8,4]) -> f32[8] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %constant.3 = f32[] constant(0)
  ROOT %reduce.5 = f32[8]{0} reduce(%param_0, %constant.3), dimensions={1}, to_apply=%region_0, metadata={op_name="jit(step)/log_softmax" stack_frame_id=4}
}

%fused_concat (param_0: f32[8,4], param_1: f32[8,4]) -> f32[8,8] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %param_1 = f32[8,4]{1,0} parameter(1)
  ROOT %concatenate.1 = f32[8,8]{1,0} concatenate(%param_0, %param_1), dimensions={1}
}

ENTRY %main.3 (x: f32[8,4], w: f32[4,4], m: f32[4]) -> (f32[8,8], f32[4]) {
  %x = f32[8,4]{1,0} parameter(0)
  %w = f32[4,4]{1,0} parameter(1)
  %m = f32[4]{0} parameter(2)
  %conv.1 = f32[8,4]{1,0} custom-call(%x, %w), custom_call_target="__cudnn$convForward", metadata={op_name="jit(step)/conv" stack_frame_id=1}
  %mean.1 = f32[4]{0} fusion(%conv.1), kind=kInput, calls=%fused_mean
  %all-reduce.1 = f32[4]{0} all-reduce(%mean.1), replica_groups={}, to_apply=%region_0
  %norm.1 = f32[8,4]{1,0} fusion(%conv.1, %all-reduce.1), kind=kLoop, calls=%fused_norm
  %transpose.1 = f32[4,8]{1,0} transpose(%norm.1), dimensions={1,0}
  %copy.1 = f32[4,8]{0,1} copy(%transpose.1)
  %update.1 = f32[4]{0} fusion(%m, %mean.1), kind=kLoop, calls=%fused_momentum
  %loss.1 = f32[8]{0} fusion(%norm.1), kind=kInput, calls=%fused_loss
  %cat.1 = f32[8,8]{1,0} fusion(%norm.1, %norm.1), kind=kLoop, calls=%fused_concat
  %pool.1 = f32[8,4]{1,0} reduce-window(%norm.1, %m), window={size=1x1}, to_apply=%region_0
  ROOT %tuple.1 = (f32[8,8]{1,0}, f32[4]{0}) tuple(%cat.1, %update.1)
}
'''


def test_instructions_get_their_categories_from_what_they_fuse_and_where_they_were_written():
  module, computations = profile.parse_hlo(HLO)
  assert module == 'jit_step' and 'main.3' in computations
  by_op = profile.categories(HLO)
  assert by_op['conv.1'] == 'convolutions'
  assert by_op['mean.1'] == 'BN statistics'
  assert by_op['norm.1'] == 'BN normalization'
  assert by_op['all-reduce.1'] == 'collectives'
  assert by_op['update.1'] == 'optimizer'
  assert by_op['loss.1'] == 'other'        # optax's loss is not the optimizer
  assert by_op['cat.1'] == 'concatenations'
  assert by_op['pool.1'] == 'pooling'
  assert by_op['transpose.1'] == by_op['copy.1'] == 'layout copies'


def test_the_summary_adds_up_and_counts_unknown_ops_as_other():
  times = {'conv.1': 0.6, 'mean.1': 0.2, 'mystery.7': 0.2}
  summary = profile.summarize(times, profile.categories(HLO), num_steps=2)
  c = summary['categories']
  assert summary['traced_op_seconds_per_step'] == pytest.approx(0.5)
  assert c['convolutions']['ms_per_step'] == pytest.approx(300)
  assert c['other']['share'] == pytest.approx(0.2)
  assert sum(v['share'] for v in c.values()) == pytest.approx(1)
  assert summary['unnamed_ops'] == ['mystery.7']
  text = profile.summary_text(summary, 'title')
  assert 'convolutions' in text and '60.0%' in text


def test_the_steps_ops_are_found_under_a_decorated_module_name_or_none():
  times = {'jit_step(7)': {'conv.1': 1.0}, 'jit_other': {'x': 5.0}}
  assert profile.step_op_times(times, 'jit_step') == ({'conv.1': 1.0}, ['jit_step(7)'])
  merged, modules = profile.step_op_times({'': {'conv.1': 1.0}, 'other': {'x': 2.0}}, 'jit_step')
  assert merged == {'conv.1': 1.0, 'x': 2.0} and modules == ['', 'other']


def test_a_trace_of_the_tiny_network_is_summarized_by_category(tmp_path):
  from configs import tiny
  summary = profile.profile_train_step(tiny.get_config(), 16, 2, str(tmp_path))
  shares = {k: v['share'] for k, v in summary['categories'].items()}
  for category in ('convolutions', 'BN statistics', 'BN normalization', 'pooling',
                   'concatenations', 'collectives', 'optimizer', 'augmentation'):
    assert shares[category] > 0, (category, shares)
  assert sum(shares.values()) == pytest.approx(1)
  # Nearly every traced op is an instruction of the compiled step.
  assert not summary['unnamed_ops'], summary['unnamed_ops']
  text = (tmp_path / 'profile_summary.txt').read_text()
  assert 'BN statistics' in text and 'largest ops' in text
  assert (tmp_path / 'train_step.hlo.txt').stat().st_size > 0
  assert summary['traced_modules'] == [summary['module']]
