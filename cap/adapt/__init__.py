"""CAP on a folder of one's own images: `cap adapt` (class names and images in, an adapted
classifier and a report out) and `cap predict` (that classifier on new images).

Modules, one job each: :mod:`~cap.adapt.user_inputs` (reading and checking the user's files),
:mod:`~cap.adapt.folder_source` (the folder as a training source), :mod:`~cap.adapt.adaptation`
(the whole run and its outputs), :mod:`~cap.adapt.classifier_file` (the adapted classifier on
disk), :mod:`~cap.adapt.predictions` (classifying files, the CSV), :mod:`~cap.adapt.prediction`
(`cap predict`) and :mod:`~cap.adapt.report_tables` (what the report notebook shows). Nothing is
imported here, so the report notebook's tables load without torch.
"""
