"""The paper's training mixture (UniSim, Table 5), weights as printed (0.1 or 0.05, "without careful tuning").

Directories are where `unisim convert` wrote each dataset; replace the `gs://YOUR_BUCKET/clips/` prefix with yours
(or pass `--mixture DIR:WEIGHT,…`). The paper's "miscellaneous" sets are unpublished; point those entries at your
own `video_captions` / `episode_folders` conversions or delete them. Weights need not sum to 1: they are normalised.
"""

ROOT = "gs://YOUR_BUCKET/clips"

MIXTURE = [
    # simulation
    (f"{ROOT}/habitat_objectnav", 0.1, "Habitat HM3D (710 examples)"),
    (f"{ROOT}/language_table_sim", 0.05, "Language Table sim (160k)"),
    # real robot
    (f"{ROOT}/bridge", 0.05, "Bridge Data (2k)"),
    (f"{ROOT}/rt1", 0.1, "RT-1 data (70k)"),
    (f"{ROOT}/language_table_real", 0.05, "Language Table real (440k)"),
    (f"{ROOT}/misc_robot_videos", 0.05, "Miscellaneous robot videos (133k)"),
    # human activities
    (f"{ROOT}/ego4d", 0.1, "Ego4D (3.5M)"),
    (f"{ROOT}/ssv2", 0.1, "Something-Something V2 (160k)"),
    (f"{ROOT}/epic_kitchens", 0.1, "EPIC-KITCHENS (25k)"),
    (f"{ROOT}/misc_human_videos", 0.05, "Miscellaneous human videos (50k)"),
    # panorama scans
    (f"{ROOT}/r2r", 0.1, "Matterport Room-to-Room scans (3.5M)"),
    # internet text-image
    (f"{ROOT}/laion400m", 0.05, "LAION-400M (400M)"),
    (f"{ROOT}/align", 0.05, "ALIGN (400M)"),
    # internet video
    (f"{ROOT}/misc_videos", 0.05, "Miscellaneous videos (13M)"),
]
