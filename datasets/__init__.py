from .images import MODEL, NORMALIZATIONS, DataError, mean_std, normalized, open_image, to_rgb, unnormalize
from .kitti import KITTIEigen, drive_of
from .nyu import DEFAULT_DATA_PATH, DEFAULT_TEST_LIST, NYUDepthV2, scene_of
