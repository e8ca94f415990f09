"""The learned simulator: trained checkpoints rolled out autoregressively, as environments and as a server.

This folder is the rollout core, what an RL user imports: core.py (`Simulator`, the samplers' settings, `Action`),
checkpoint.py (loading a trained stage), rollout.py (`unisim rollout`), envs.py (dm_env / gymnasium environments)
and vector.py (`SimulatorVectorEnv`). Its other jobs have their own rooms: serving/ (the session pool and batcher,
HTTP, dm_env_rpc, the client, the playground, and protocol.py that they share) and evaluation/ (`unisim eval` and
the FID/FVD features).
"""
