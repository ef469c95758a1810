from beanstalk_py.app.entry import main

main()
