"""The judge, as one concern: how it is asked and how its reply becomes a score (`protocol`), how far two
judges agree (`agreement`, behind `compare-judges`), which judge agrees best with a reference such as GPT-4
(`evaluate`, behind `judge-eval`), and a scorer fitted to the user's own reference scores (`fit`, behind
`judge-fit`).

Nothing here imports the phases: the quality phase judges through `protocol`, and the commands hand the
quality phase's scored records to `evaluate`.
"""
