# Validation diagnostic of ablations 6 and 7 (docs/results.md): 300 more steps from the finished
# separate-regression network of `pinqi compare --config configs/compare/cpu.yaml`, once per
# objective. Logs: end_to_end_<true|false>[_t1_weight_power_2].csv beside this file.
set -e
C="--config configs/cpu-brainweb-ablation.yaml --set data.t1_any_probability=0.0 --set data.uniform_probability=0.0 --set data.phase_any_probability=0.0 --set data.intensity_range=[1.0,1.0] --set model.lambda_p_per_parameter=false --set method.name=unrolled-fit --set method.iterations=3 --set optim.pretrain_epochs=0 --set optim.max_steps=300 --set optim.samples_per_epoch=400 --set optim.warmup_steps=30 --init runs/compare-cpu/ablation-separate-regression/run/checkpoints/last.ckpt"
for e2e in true false; do
  pinqi train $C --set method.end_to_end=$e2e --out runs/e2e-diag/e2e-$e2e
done
# end to end on the R1 squared error x (T1 / 1 s)^2: the relative T1 error, to first order
pinqi train $C --set method.end_to_end=true --set optim.t1_weight_power=2 --out runs/e2e-diag/e2e-t1w2
