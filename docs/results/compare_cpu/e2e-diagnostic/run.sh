set -e
C="--config configs/cpu-brainweb-ablation.yaml --set data.t1_any_probability=0.0 --set data.uniform_probability=0.0 --set data.phase_any_probability=0.0 --set data.intensity_range=[1.0,1.0] --set model.lambda_p_per_parameter=false --set method.name=unrolled-fit --set method.iterations=3 --set optim.pretrain_epochs=0 --set optim.max_steps=300 --set optim.samples_per_epoch=400 --set optim.warmup_steps=30 --init runs/compare-cpu/ablation-separate-regression/run/checkpoints/last.ckpt"
for e2e in true false; do
  pinqi train $C --set method.end_to_end=$e2e --out runs/e2e-diag/e2e-$e2e
done
