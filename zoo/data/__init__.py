"""Data sources: formats the trainers read, registered through ``zoo_register_data_sources``.

`sources.open_data` picks the source for a path (by ``data_format``, a folder, or the suffix);
`examples` holds the classifier readers (``.npz``, ``.csv``), `images` the image-folder reader.
The text reader for causal LMs lives with the other language-model pieces in `zoo.lm.text_data`.
"""
