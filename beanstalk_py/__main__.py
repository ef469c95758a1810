from beanstalk_py.entry import main

main()
