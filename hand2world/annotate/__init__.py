"""hand2world.annotate: monocular annotation, plain egocentric video -> training clips with hands and camera.

``annotate_video(videos, out)`` writes ``hand2world.data`` clips (the format the synthetic world
writes) plus a QA report per video; ``annotate_frames`` is the in-memory core. Stages: MediaPipe
tracking (``tracks``: identity, outliers, gaps, smoothing), hand-mesh fits and control renders
(the live path's ``ControlPipeline``), keyframe visual odometry with the hands masked out
(``camera``), QA (``qa``), validation against synthetic ground truth (``validate``).
"""

from hand2world.annotate.camera import OdometryConfig, VisualOdometry, hand_mask_from_landmarks
from hand2world.annotate.pipeline import AnnotateConfig, Annotation, annotate_frames, annotate_video, fit_tracks
from hand2world.annotate.tracks import HandTracks, TrackConfig, build_tracks, clean_tracks

__all__ = [
    "AnnotateConfig",
    "Annotation",
    "HandTracks",
    "OdometryConfig",
    "TrackConfig",
    "VisualOdometry",
    "annotate_frames",
    "annotate_video",
    "build_tracks",
    "clean_tracks",
    "fit_tracks",
    "hand_mask_from_landmarks",
]
