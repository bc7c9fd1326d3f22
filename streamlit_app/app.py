"""digitrec: the app's entry point. It only routes; each page is one file.

All of it sits in ``main()``, run only as Streamlit's script (``__name__ == "__main__"``). A
training worker is a spawned process, and spawn first re-runs the parent's main script in the
child under the name ``__mp_main__``; in a Streamlit server that script is this file. Unguarded,
every worker and spare imported Streamlit and ran the app's Home page (its models, its timing
line) before it could train, and a spare handed a run kept its page waiting that long.
"""


def main() -> None:
    import sys

    import streamlit as st

    from digitrec.engines import choose_engine
    from streamlit_app import state

    choose_engine(sys.argv[1:])  # `streamlit run streamlit_app/app.py -- --engine ray`: runs train on the Ray cluster

    st.set_page_config(page_title="digitrec: how networks read digits", page_icon=":material/draw:", layout="wide")

    pages = {
        "Start": [
            st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
            st.Page("views/draw.py", title="Draw & predict", icon=":material/draw:", url_path="draw"),
        ],
        "Explore": [
            st.Page("views/fc_explorer.py", title="Fully connected network", icon=":material/hub:", url_path="fc"),
            st.Page("views/cnn_explorer.py", title="Convolutional network", icon=":material/grid_view:", url_path="cnn"),
            st.Page("views/attributions.py", title="What made it say that?", icon=":material/search_insights:",
                    url_path="attributions"),
            st.Page("views/mistakes.py", title="Mistakes", icon=":material/error:", url_path="mistakes"),
            st.Page("views/unit.py", title="Inside a unit", icon=":material/person_search:", url_path="unit"),
            st.Page("views/map.py", title="Where a digit lands", icon=":material/scatter_plot:", url_path="map"),
            st.Page("views/break_it.py", title="Break it", icon=":material/heart_broken:", url_path="break"),
        ],
        "Train": [
            st.Page("views/train.py", title="Train a network", icon=":material/model_training:", url_path="train"),
            st.Page("views/race.py", title="FC vs CNN race", icon=":material/sports_score:", url_path="race"),
        ],
        "Learn": [
            st.Page("views/lessons.py", title="Lessons", icon=":material/school:", url_path="lessons"),
        ],
    }

    page = st.navigation(pages)
    state.track_session()  # so what it holds is let go when it ends
    state.sync_url()
    with state.page_timing(page.url_path or "home"):  # server time per page, for the load test
        page.run()


if __name__ == "__main__":  # Streamlit's script; a spawned worker reads this file as "__mp_main__"
    main()
