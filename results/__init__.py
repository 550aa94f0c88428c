"""Files on disk: the capped output folder, and the results and inputs in it.

`OutputFolder` (folder.py) holds results until they are delivered, capped at a number of files;
media.py checks that a result is the image or video it claims and fits an image to an upload limit;
inputs.py brings in the images people send as a job's input; keeper.py keeps results in an
S3-compatible bucket (s3.py) when OUTPUT_STORE is set, the folder then being this machine's copies.
"""

from results.folder import OutputError, OutputFolder

__all__ = ["OutputError", "OutputFolder"]
