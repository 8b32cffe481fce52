"""``zoo explore``: an interactive page for any model of the zoo, in the browser.

Draw or upload an image and see its reconstruction, posterior and likelihood; move the informative
latents with sliders; interpolate between two images; draw prior samples (of a chosen class); click on
the 2-D manifold or on a scatter of test codes to decode a point. Everything is driven by the model
contract (:mod:`zoo.contract`), so every registered variant works, and what does not apply to a model
is said in one line on the page.

- :mod:`zoo.explore.explorer`: the callbacks as plain functions over one loaded model (no Gradio);
- :mod:`zoo.explore.images`, :mod:`zoo.explore.checks`, :mod:`zoo.explore.plots`: what the page sends,
  checked and converted, and the pictures it shows;
- :mod:`zoo.explore.app`: the Gradio page; :mod:`zoo.explore.serve`: starting it (loopback only unless
  asked); :mod:`zoo.explore.space`: the folder that runs as a Hugging Face Space.

Gradio is an optional dependency (``pip install 'ae-zoo[explore]'``), imported only by ``app`` and
``serve``: ``import zoo`` and ``import zoo.explore`` never import it.
"""
