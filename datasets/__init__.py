from .nyu import DEFAULT_DATA_PATH, DEFAULT_TEST_LIST, NORMALIZATIONS, DataError, NYUDepthV2, open_image, scene_of
