# The shipped default model's head recipe (docs/results.md section 4), sourced by the scripts that
# retrain it (cross-source.sh, learning-curve.sh) so they cannot drift apart.
default_recipe=(--views 4 --head-hidden 512 --head-dropout 0.6 --head-weight-decay 0.01 --head-epochs 40)
